"""Model verbs: `classify` (texts through the served model), `evaluate` and `calibrate` (the model on a
labelled file), `finetune` and `adapt` (training a candidate)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from worker.cli.common import Verbs, database, duration, png
from worker.contracts.errors import ExitStatus, OperatorError
from worker.settings import Settings, format_duration


def register(verbs: Verbs) -> None:
    classify = verbs.add_parser("classify", help="classify texts (arguments, or one per line on stdin)")
    classify.add_argument("texts", nargs="*", help="texts to classify; read stdin when none are given")
    classify.add_argument("--model", help="model id or local directory (default: TRIAGE_MODEL)")
    classify.set_defaults(handler=_classify)

    evaluate = _labelled_verb(verbs, "evaluate", "measure the model on a labelled file: accuracy, F1, calibration")
    _audit_weight(evaluate)
    evaluate.add_argument("--json", type=Path, metavar="OUT.json", help="also write every figure as JSON")
    evaluate.add_argument("--plot", type=Path, metavar="OUT.png", help="also draw reliability and confusion")
    evaluate.add_argument(
        "--compare-quantized",
        action="store_true",
        help="run the model in fp32 (torch) and in int8 (TRIAGE_ENGINE=onnx-int8); print both side by side",
    )
    evaluate.set_defaults(handler=_evaluate)

    calibrate = _labelled_verb(verbs, "calibrate", "fit a temperature (and optionally a threshold) on a labelled file")
    calibrate.add_argument("--holdout", type=float, default=0.3, help="share kept out of the fit to judge it")
    calibrate.add_argument("--seed", type=int, default=0, help="seed of the fit/held-out split")
    calibrate.add_argument("--out", type=Path, help="file to write (default: TRIAGE_CALIBRATION, or beside the model)")
    _threshold_target(calibrate)
    calibrate.set_defaults(handler=_calibrate)

    finetune = _labelled_verb(
        verbs, "finetune", "train a new model on a labelled file and judge it beside its base on a held-out part"
    )
    _audit_weight(finetune)
    finetune.add_argument("--out", type=Path, required=True, help="new folder for the model, calibration and card")
    finetune.add_argument("--holdout", type=float, default=0.2, help="share kept out of training to judge it")
    finetune.add_argument("--seed", type=int, default=0, help="seed of the split, the head and the batches")
    finetune.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="most epochs; early stopping may end sooner (default: the measured recipe's, 2)",
    )
    finetune.add_argument("--learning-rate", type=float, default=None, help="(default: the measured recipe's, 5e-5)")
    finetune.add_argument("--batch-size", type=int, default=32)
    finetune.add_argument(
        "--max-length", type=int, default=None, help="word pieces per text in training (default: the recipe's, 128)"
    )
    finetune.add_argument(
        "--weighting", choices=["balanced", "sqrt", "none"], default=None, help="class weights (default: sqrt)"
    )
    finetune.add_argument(
        "--category-training",
        choices=["joint", "sequential"],
        default="joint",
        help="with tags: train the category head with the encoder (joint) or after it, on the frozen result",
    )
    finetune.add_argument(
        "--head-learning-rate", type=float, default=None, help="the category head's own rate (default: 1e-3)"
    )
    _threshold_target(finetune)
    finetune.set_defaults(handler=_finetune)

    categories = verbs.add_parser("categories", help="categories nobody defined yet: `categories suggest`")
    actions = categories.add_subparsers(dest="action", required=True, metavar="ACTION")
    suggest = actions.add_parser(
        "suggest", help="cluster the escalations left in `general` (or routed with a low score) into candidates"
    )
    suggest.add_argument("--since", type=duration, default="30d", help="how far back to read: 7d, 30d, 12w")
    suggest.add_argument("--clusters", type=int, default=8, help="how many clusters to find")
    suggest.add_argument("--limit", type=int, default=5000, help="read at most this many of the newest")
    suggest.add_argument(
        "--low-score", type=float, default=None, help="a routed item under this category score counts as unsure "
        "(default: TRIAGE_CATEGORY_THRESHOLD)",
    )  # fmt: skip
    suggest.set_defaults(handler=_suggest)

    adapt = verbs.add_parser(
        "adapt", help="masked-LM training on unlabelled feedback, before finetune (domain adaptation)"
    )
    texts = adapt.add_mutually_exclusive_group(required=True)
    texts.add_argument("--data", type=Path, help="JSON lines, CSV or TSV with a text column (labels not needed)")
    texts.add_argument("--from-database", action="store_true", help="the stored feedback texts")
    adapt.add_argument("--since", type=duration, help="with --from-database: only this recent (default: all)")
    adapt.add_argument("--text-column", default="text", help="the text's key or column")
    adapt.add_argument("--model", help="model id or local directory to start from (default: TRIAGE_MODEL)")
    adapt.add_argument("--out", type=Path, required=True, help="new folder for the adapted checkpoint")
    adapt.add_argument("--epochs", type=int, default=None)
    adapt.add_argument("--learning-rate", type=float, default=None)
    adapt.add_argument("--batch-size", type=int, default=32)
    adapt.add_argument("--max-length", type=int, default=None, help="word pieces per text in training")
    adapt.add_argument("--seed", type=int, default=0)
    adapt.set_defaults(handler=_adapt)


def _labelled_verb(verbs: Verbs, name: str, text: str) -> argparse.ArgumentParser:
    """A verb that reads a labelled file, with the options every such verb takes."""
    verb: argparse.ArgumentParser = verbs.add_parser(name, help=text)
    verb.add_argument("--data", type=Path, required=True, help="JSON lines, CSV or TSV (optionally .gz)")
    verb.add_argument("--model", help="model id or local directory (default: TRIAGE_MODEL)")
    verb.add_argument("--text-column", default="text", help="the text's key or column")
    verb.add_argument("--label-column", default="label", help="the label's key or column")
    verb.add_argument(
        "--rating-column",
        help="take labels from 1-5 star ratings in this column: 1-2 negative, 4-5 positive, 3 left out",
    )
    verb.add_argument(
        "--category-column",
        default="category",
        help="the category tag's key or column (checked against TRIAGE_CATEGORIES); rows without one are untagged",
    )
    verb.add_argument("--limit", type=int, help="only the first N examples")
    return verb


def _audit_weight(verb: argparse.ArgumentParser) -> None:
    verb.add_argument(
        "--audit-weight", type=float, default=1.0, help="weight of audit-sample verdicts (export marks them)"
    )


def _threshold_target(verb: argparse.ArgumentParser) -> None:
    target = verb.add_mutually_exclusive_group()
    target.add_argument("--target-escalation-precision", type=float, metavar="P", help="choose the threshold too")
    target.add_argument("--max-escalation-share", type=float, metavar="S", help="choose the threshold too")
    verb.add_argument(
        "--target-routed-accuracy",
        type=float,
        metavar="A",
        help="with categories: choose the category threshold where this share of routed items reach the right team",
    )


def _classify(settings: Settings, args: argparse.Namespace) -> int:
    from worker.contracts.values import ClassificationFailure
    from worker.runtime.wiring import build_classifier

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for answer in build_classifier(settings).predict(texts):
        if isinstance(answer, ClassificationFailure):
            print(json.dumps([{"error": answer.message}]))
        else:
            print(json.dumps([{"label": answer.label.upper(), "score": round(answer.score, 4)}]))
    return ExitStatus.OK


def _labelled_examples(args: argparse.Namespace, settings: Settings) -> list[Any]:
    from worker.ops.quality.labelled import read_examples
    from worker.runtime.wiring import build_categories

    if args.limit is not None and args.limit < 1:
        raise OperatorError(f"--limit must be at least 1, got {args.limit}")
    audit_weight = getattr(args, "audit_weight", 1.0)  # evaluate and finetune take --audit-weight
    if audit_weight <= 0:
        raise OperatorError(f"--audit-weight must be above 0, got {audit_weight}")
    examples = read_examples(
        args.data,
        args.text_column,
        args.label_column,
        rating_column=args.rating_column,
        audit_weight=audit_weight,
        category_column=args.category_column,
        categories=build_categories(settings),
    )
    return examples[: args.limit]


def _evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.quality import category_measures, evaluate, measures
    from worker.ops.quality.plot import plot
    from worker.runtime.wiring import build_classifier, build_policy

    png(args.plot, "--plot")
    examples = _labelled_examples(args, settings)
    if args.compare_quantized:
        from worker.ops.quality import quantized

        found = quantized.compare(settings, examples, str(args.data))
        print(quantized.render(found))
        if args.json:
            args.json.write_text(quantized.as_json(found), encoding="utf-8")
            print(f"figures written to {args.json}", file=sys.stderr)
        return ExitStatus.OK
    classifier = build_classifier(settings)
    policy = build_policy(settings, classifier)
    classifier.keep_category_logits = True
    scored = evaluate.score(classifier, examples)
    if not scored.predictions:
        raise OperatorError(f"the model could classify none of the {len(examples)} texts")
    evaluation = measures.measure(scored.truths, scored.negative_probs, policy.threshold, scored.weights)
    about = {"data": str(args.data), **classifier.describe(), "failed": scored.failed}
    about["texts_per_s"] = scored.texts_per_s
    print(evaluate.render(evaluation, about))
    figures = _category_figures(settings, classifier, scored, policy.router)
    if figures is not None:
        about["category"] = figures.as_dict()
        if policy.router is not None:
            about["category"]["gated_when_served"] = policy.router.gated
        print("\n" + "\n".join(category_measures.render(figures)))
    if args.json:
        args.json.write_text(evaluate.as_json(evaluation, about), encoding="utf-8")
        print(f"figures written to {args.json}", file=sys.stderr)
    if args.plot:
        title = f"{args.data.name}: {about['model']} (calibration {about['calibration']}, {evaluation.n:,} texts)"
        print(f"chart written to {plot(evaluation, title, args.plot)}", file=sys.stderr)
    return ExitStatus.OK


def _category_figures(settings: Settings, classifier: Any, scored: Any, router: Any) -> Any:
    """The category figures on the tagged examples, at the served threshold and temperature; None when
    the model has no category head or the data has no tags."""
    from worker.ops.quality import category_measures

    tagged = scored.tagged()
    if not classifier.categories or not tagged:
        return None
    return category_measures.measure(
        tagged,
        classifier.categories,
        temperature=classifier.category_temperature,
        threshold=router.threshold if router else settings.category_threshold,
        f1_floor=settings.category_f1_floor,
    )


def _calibrate(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.quality import calibrate, evaluate
    from worker.runtime.wiring import build_classifier

    path = calibrate.output_path(args.out, settings.calibration, settings.model)
    calibrate.check_holdout(args.holdout)
    examples = _labelled_examples(args, settings)
    classifier = build_classifier(settings, calibrated=False)
    classifier.keep_category_logits = True
    scored = evaluate.score(classifier, examples)
    fitted = calibrate.fit(
        scored,
        model=settings.model,
        revision=classifier.revision,
        threshold=settings.low_confidence_threshold,
        holdout=args.holdout,
        seed=args.seed,
        min_precision=args.target_escalation_precision,
        max_share=args.max_escalation_share,
        data=str(args.data),
    )
    category_lines: list[str] = []
    tagged = scored.tagged()
    if classifier.categories and tagged:
        from dataclasses import replace

        from worker.ops.quality import category_measures

        fit_part, held = calibrate.split(len(tagged), args.holdout, args.seed)
        section, figures = category_measures.fit(
            [tagged[i] for i in fit_part],
            [tagged[i] for i in held],
            classifier.categories,
            f1_floor=settings.category_f1_floor,
            threshold=settings.category_threshold,
            target=args.target_routed_accuracy,
        )
        fitted = replace(fitted, calibration=replace(fitted.calibration, category=section))
        category_lines = [
            f"category temperature {section.temperature:.4f}"
            + (f", threshold {section.threshold:.2f} chosen for {section.threshold_rule}" if section.threshold else ""),
            *category_measures.render(figures),
        ]
    elif args.target_routed_accuracy is not None:
        raise OperatorError("--target-routed-accuracy needs a model with a category head and tagged examples")
    print(calibrate.render(fitted, calibrate.write(fitted.calibration, path)))
    if category_lines:
        print("\n".join(category_lines))
    return ExitStatus.OK


def _finetune(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.learning import finetune
    from worker.ops.quality.calibrate import check_holdout

    check_holdout(args.holdout)
    from worker.runtime.wiring import build_categories

    recipe = finetune.recipe(
        args.epochs, args.learning_rate, args.batch_size, args.max_length, args.seed, args.head_learning_rate
    )
    outcome = finetune.run(
        settings,
        data=args.data,
        examples=_labelled_examples(args, settings),
        base=args.model or settings.model,
        out=args.out,
        recipe=recipe,
        weighting=args.weighting or finetune.DEFAULT_WEIGHTING,
        holdout=args.holdout,
        min_precision=args.target_escalation_precision,
        max_share=args.max_escalation_share,
        categories=build_categories(settings),
        category_training=args.category_training,
        target_routed_accuracy=args.target_routed_accuracy,
    )
    print(finetune.render(outcome))
    return ExitStatus.OK


def _suggest(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.learning import suggest
    from worker.runtime.wiring import build_torch_classifier

    if args.clusters < 2:
        raise OperatorError(f"--clusters must be at least 2, got {args.clusters}")
    low = settings.category_threshold if args.low_score is None else args.low_score
    with database(settings) as engine:
        texts = suggest.texts_left_in_general(engine, args.since, low, args.limit)
    window = f"in the last {format_duration(args.since)}"
    if not texts:
        raise OperatorError(f"no stored escalation text left in `general` {window}", exit_status=ExitStatus.FAILED)
    vectors = build_torch_classifier(settings).embed(texts)
    print(suggest.render(suggest.suggest(vectors, texts, args.clusters), len(texts), window))
    return ExitStatus.OK


def _adapt(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.learning import adapt, finetune

    if args.since is not None and not args.from_database:
        raise OperatorError("--since applies to --from-database; a file is read whole")
    recipe = finetune.recipe(
        args.epochs or adapt.DEFAULT_EPOCHS,
        args.learning_rate or adapt.DEFAULT_LEARNING_RATE,
        args.batch_size,
        args.max_length or adapt.DEFAULT_MAX_LENGTH,
        args.seed,
    )
    if args.from_database:
        with database(settings) as engine:
            texts = adapt.texts_from_database(engine, args.since)
        source = "the stored feedback" + (f" of the last {format_duration(args.since)}" if args.since else "")
    else:
        from worker.ops.quality.labelled import read_texts

        texts, source = read_texts(args.data, args.text_column), str(args.data)
    outcome = adapt.run(
        settings, texts=texts, source=source, base=args.model or settings.model, out=args.out, recipe=recipe
    )
    print(adapt.render(outcome))
    return ExitStatus.OK
