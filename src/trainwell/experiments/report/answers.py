"""The study's questions answered from its numbers: each answer is computed, never written in advance.

- :func:`compare` — a variant against the one it is compared with (``compare_to``): is it more accurate
  (beyond the noise), does it converge faster (epochs and seconds to first reach the validation accuracy of
  the model the other keeps), what does it cost per epoch and in total. This answers "does BN converge faster, is the model
  better, what does it cost?" and "does 1cycle speed training up?".
- :func:`mc_answer` — does MC dropout help: its accuracy against the ordinary prediction on the same images
  (McNemar's paired test), and its log loss (calibration).
- :func:`best_answer` — which variant to keep, by validation accuracy, and its test accuracy.

Noise: a difference in accuracy counts when it exceeds ``NOISE_Z`` standard errors. With several seeds the
standard error comes from the spread over seeds; with one seed, from the binomial sampling error of an
accuracy measured on ``n`` validation images, ``sqrt(p (1 − p) / n)`` — the noise of the measurement alone,
a lower bound on the noise between two trainings.
"""

from __future__ import annotations

import math

from trainwell.experiments.report.collect import VariantRuns
from trainwell.experiments.report.document import Answer

# Two standard errors: about 95 % two-sided coverage for a normal estimate.
NOISE_Z = 2.0
# Wall-clock times within 10 % of each other are "about the same": epochs on a shared machine vary that much.
SAME_TIME = 0.10
# Accuracies are ratios of counts read back from JSON: equal ones may differ in the last bits.
TIE = 1e-9


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def points(x: float) -> str:
    return f"{round(100 * x, 1) + 0.0:+.1f} points"  # + 0.0 turns a rounded -0.0 into 0.0


def duration(seconds: float) -> str:
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def validation_size(v: VariantRuns) -> int | None:
    """How many validation images the accuracies of ``v`` were measured on, where the files say."""
    for r in v.finished:
        if r.mc and "valid" in r.mc:
            return int(r.mc["valid"]["examples"])
        size = (r.config or {}).get("data", {}).get("validation_size")
        if isinstance(size, int) and size > 0:
            return size
    return None


def accuracy_noise(v: VariantRuns, ref: VariantRuns) -> tuple[float, str] | None:
    """The standard error of the difference of the two validation accuracies, and how it was obtained."""
    a, b = v.stat("val_accuracy"), ref.stat("val_accuracy")
    if a is None or b is None:
        return None
    if a.n > 1 and b.n > 1:
        return math.sqrt(a.std**2 / a.n + b.std**2 / b.n), f"over {a.n} and {b.n} seeds"
    n = validation_size(v) or validation_size(ref)
    if not n:
        return None
    return (
        math.sqrt(a.mean * (1 - a.mean) / n + b.mean * (1 - b.mean) / n),
        f"the sampling error of {n:,} validation images; one seed each",
    )


def epochs_to_reach(curve: list[float], target: float) -> int | None:
    """The first epoch (1-based) whose value reaches ``target``, or None."""
    return next((i + 1 for i, x in enumerate(curve) if x >= target), None)


def compare(v: VariantRuns, ref: VariantRuns) -> Answer | None:
    """``v`` against ``ref``: accuracy, convergence, cost per epoch and total time (see the module docstring)."""
    a, b = v.stat("val_accuracy"), ref.stat("val_accuracy")
    if a is None or b is None:
        return None
    question = v.question or f"How does {v.name} compare with {ref.name}?"
    evidence, verdict, tone = [], [], "neutral"

    diff = a.mean - b.mean
    noise = accuracy_noise(v, ref)
    acc_line = f"Validation accuracy: {v.name} {pct(a.mean)}, {ref.name} {pct(b.mean)} ({points(diff)}"
    if noise is not None:
        se, how = noise
        acc_line += f"; noise level ±{100 * NOISE_Z * se:.1f} points, from {how})"
        if abs(diff) > NOISE_Z * se:
            verdict.append(f"{'more' if diff > 0 else 'less'} accurate ({points(diff)})")
            tone = "good" if diff > 0 else "bad"
        else:
            verdict.append(f"about as accurate ({points(diff)}, within the noise)")
    else:
        acc_line += ")"
        verdict.append(f"{'more' if diff > 0 else 'less'} accurate ({points(diff)})")
    evidence.append(acc_line + ".")
    t_v, t_r = v.stat("test_accuracy"), ref.stat("test_accuracy")
    if t_v and t_r:
        evidence.append(f"Test accuracy: {pct(t_v.mean)} vs {pct(t_r.mean)} ({points(t_v.mean - t_r.mean)}).")

    ref_curve, v_curve = ref.mean_curve("val_accuracy"), v.mean_curve("val_accuracy")
    ref_time, v_time = ref.mean_elapsed(), v.mean_elapsed()
    if ref_curve and v_curve:
        # The target is the accuracy of the model ref keeps (its final one), reached first at ref_epoch.
        target = b.mean
        ref_epoch = epochs_to_reach(ref_curve, target - TIE) or ref_curve.index(max(ref_curve)) + 1
        reached = epochs_to_reach(v_curve, target - TIE)
        if reached is not None:
            evidence.append(
                f"Convergence: {v.name} first reached {ref.name}'s final validation accuracy ({pct(target)}) at "
                f"epoch {reached}, after {duration(v_time[reached - 1])}; {ref.name} took {ref_epoch} epochs and "
                f"{duration(ref_time[ref_epoch - 1])}."
            )
            verdict.append(_convergence(reached, ref_epoch, v_time[reached - 1], ref_time[ref_epoch - 1]))
        else:
            best = max(v_curve)
            evidence.append(
                f"Convergence: {v.name} never reached {ref.name}'s final validation accuracy "
                f"({pct(target)}); its best epoch reached {pct(best)} (epoch {v_curve.index(best) + 1})."
            )
            verdict.append(f"never reaches {ref.name}'s accuracy")

    s_v, s_r = v.stat("seconds_per_epoch"), ref.stat("seconds_per_epoch")
    if s_v and s_r and s_r.mean > 0:
        ratio = s_v.mean / s_r.mean
        evidence.append(f"Cost per epoch: {s_v.mean:.1f} s vs {s_r.mean:.1f} s ({ratio:.2f}× {ref.name}'s).")
        verdict.append(f"{ratio:.1f}× the time per epoch")
    n_v, n_r = v.stat("epochs_run"), ref.stat("epochs_run")
    tt_v, tt_r = v.stat("train_seconds"), ref.stat("train_seconds")
    if n_v and n_r and tt_v and tt_r:
        evidence.append(
            f"Whole run: {n_v.mean:.0f} epochs in {duration(tt_v.mean)} vs {n_r.mean:.0f} epochs in "
            f"{duration(tt_r.mean)} ({tt_v.mean / tt_r.mean:.2f}×)."
        )
    return Answer(question=question, verdict=_sentence(verdict), evidence=evidence, tone=tone)


def _convergence(epochs: int, ref_epochs: int, seconds: float, ref_seconds: float) -> str:
    """ "converges in fewer epochs (5 vs 7) and less time (19 s vs 24 s)", and the other cases."""
    if epochs < ref_epochs:
        text = f"converges in fewer epochs ({epochs} vs {ref_epochs})"
    elif epochs > ref_epochs:
        text = f"needs more epochs to converge ({epochs} vs {ref_epochs})"
    else:
        text = f"converges in as many epochs ({epochs})"
    ratio = seconds / ref_seconds if ref_seconds > 0 else 1.0
    if abs(ratio - 1.0) <= SAME_TIME:
        return text + f", in about the same time ({duration(seconds)})"
    faster = ratio < 1.0
    joint = " and" if faster == (epochs <= ref_epochs) else " but"
    return (
        text + f"{joint} {'less' if faster else 'more'} time ({duration(seconds)} vs {duration(ref_seconds)})"
    )


def _sentence(parts: list[str]) -> str:
    if not parts:
        return "No numbers to compare"
    text = parts[0][0].upper() + parts[0][1:]
    if len(parts) == 1:
        return text
    return text + ", " + ", ".join(parts[1:-1]) + (", " if len(parts) > 2 else "") + "and " + parts[-1]


def mc_answer(v: VariantRuns) -> Answer | None:
    """Does MC dropout help ``v``? Paired accuracy change (McNemar) and log loss on the validation set."""
    runs = [r for r in v.finished if r.mc and "valid" in r.mc]
    if not runs:
        return None
    turned_right = sum(r.mc["valid"].get("turned_right", 0) for r in runs)
    turned_wrong = sum(r.mc["valid"].get("turned_wrong", 0) for r in runs)
    n = sum(r.mc["valid"]["examples"] for r in runs)
    acc = sum(r.mc["valid"]["accuracy"] * r.mc["valid"]["examples"] for r in runs) / n
    mc_acc = sum(r.mc["valid"]["mc_accuracy"] * r.mc["valid"]["examples"] for r in runs) / n
    loss = sum(r.mc["valid"]["log_loss"] for r in runs) / len(runs)
    mc_loss = sum(r.mc["valid"]["mc_log_loss"] for r in runs) / len(runs)
    samples = runs[0].mc["samples"]
    # McNemar: under "no effect" each changed prediction is as likely to turn right as wrong, so the net
    # change has standard deviation sqrt(changed).
    changed = turned_right + turned_wrong
    net = turned_right - turned_wrong
    significant = changed > 0 and abs(net) > NOISE_Z * math.sqrt(changed)
    evidence = [
        f"Validation accuracy: {pct(mc_acc)} with the mean of {samples} MC samples vs {pct(acc)} for the ordinary "
        f"prediction ({points(mc_acc - acc)}): {turned_right} images turned right and {turned_wrong} turned wrong "
        f"of {n:,} (the noise level for that difference is ±{NOISE_Z * math.sqrt(max(changed, 1)):.0f} images).",
        f"Log loss: {mc_loss:.4f} vs {loss:.4f} ({'better' if mc_loss < loss else 'worse'} calibrated "
        "probabilities: the loss falls when confident predictions are right and doubtful ones wrong).",
    ]
    test = [r.mc["test"] for r in runs if "test" in r.mc]
    if test:
        t_acc = sum(t["accuracy"] for t in test) / len(test)
        t_mc = sum(t["mc_accuracy"] for t in test) / len(test)
        evidence.append(f"Test accuracy: {pct(t_mc)} vs {pct(t_acc)} ({points(t_mc - t_acc)}).")
    seconds = sum(r.mc["valid"].get("mc_seconds", 0.0) for r in runs) / len(runs)
    if seconds:
        evidence.append(
            f"Cost: {duration(seconds)} for {samples} samples of {n // len(runs):,} images, "
            "without retraining."
        )
    if significant:
        verdict = "Yes" if net > 0 else "No, it hurts"
        tone = "good" if net > 0 else "bad"
        verdict += f": {points(mc_acc - acc)} accuracy"
    else:
        verdict, tone = f"Not in accuracy ({points(mc_acc - acc)}, within the noise)", "neutral"
    verdict += f", log loss {'lower' if mc_loss < loss else 'higher'} ({mc_loss:.3f} vs {loss:.3f})"
    return Answer(question=f"Does MC dropout help {v.name}?", verdict=verdict, evidence=evidence, tone=tone)


def best_answer(variants: list[VariantRuns]) -> Answer | None:
    """The variant with the best validation accuracy (the test set is only looked at for the chosen one)."""
    ranked = sorted(
        (v for v in variants if v.stat("val_accuracy")), key=lambda v: -v.stat("val_accuracy").mean
    )
    if len(ranked) < 2:
        return None
    best = ranked[0]
    evidence = [
        "Ranked by validation accuracy: "
        + ", ".join(
            f"{v.name} {pct(v.stat('val_accuracy').mean)}"
            + (f" (MC dropout {pct(v.mc_stat('mc_accuracy').mean)})" if v.mc_stat("mc_accuracy") else "")
            for v in ranked
        )
        + "."
    ]
    test = best.stat("test_accuracy")
    if test:
        evidence.append(
            f"Chosen on the validation set; its test accuracy, measured once, is {pct(test.mean)}."
        )
    return Answer(
        question="Which variant is best?",
        verdict=f"{best.name}, at {pct(best.stat('val_accuracy').mean)}",
        evidence=evidence,
        tone="neutral",
    )
