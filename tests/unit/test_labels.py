import pytest

from worker.model.labels import LabelMappingError, normalise_labels


@pytest.mark.parametrize(
    "id2label",
    [
        {0: "NEGATIVE", 1: "POSITIVE"},
        {0: "LABEL_0", 1: "LABEL_1"},
        {0: "neg", 1: "pos"},
        {0: "Negative", 1: "Positive"},
        {0: "label_0", 1: "label_1"},
    ],
)
def test_known_conventions(id2label: dict[int, str]) -> None:
    assert normalise_labels(id2label) == {0: "negative", 1: "positive"}


def test_reversed_order_is_respected() -> None:
    assert normalise_labels({0: "POSITIVE", 1: "NEGATIVE"}) == {0: "positive", 1: "negative"}


def test_unknown_labels_fail_without_a_map() -> None:
    with pytest.raises(LabelMappingError, match="TRIAGE_LABEL_MAP"):
        normalise_labels({0: "bad", 1: "good"})


def test_override_by_name_or_index() -> None:
    assert normalise_labels({0: "bad", 1: "good"}, {"BAD": "negative", "good": "positive"}) == {
        0: "negative",
        1: "positive",
    }
    assert normalise_labels({0: "LABEL_0", 1: "LABEL_1"}, {"0": "positive", "1": "negative"}) == {
        0: "positive",
        1: "negative",
    }


@pytest.mark.parametrize(
    "id2label",
    [{0: "POSITIVE", 1: "POSITIVE"}, {0: "NEGATIVE"}, {0: "NEGATIVE", 1: "POSITIVE", 2: "LABEL_1"}],
)
def test_ambiguous_mappings_fail(id2label: dict[int, str]) -> None:
    with pytest.raises(LabelMappingError):
        normalise_labels(id2label)
