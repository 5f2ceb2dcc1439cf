"""`qornn sensitivity RUN`: which tensor can lose bits, and an allocation under a bit budget.

For each tensor (W, U, V, the hidden state h, the input x) the integer model's task metric is
measured with that tensor alone at each lower width, the others held at the run's widths (the
one-at-a-time sensitivity of Uhlich et al. / HAWQ, measured rather than estimated from a
Hessian). The recommended allocation under a budget of weight bits starts from the run's widths
and repeatedly lowers the weight tensor with the smallest measured loss per bit saved; the
allocation it ends at is then exported and measured as a whole (the one-at-a-time losses do not
simply add), and both figures are reported.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from qornn.errors import QornnError

TENSORS = ("W", "U", "V", "h", "x")


def _weight_bits(bits: dict, sizes: dict) -> int:
    return sum(bits[k] * sizes[k] for k in ("W", "U", "V"))


def run_sensitivity(run, out, act_bits: int | None = None, input_bits: int | None = None,
                    output_bits: int | None = None,
                    eval_batches: int | None = 4, budget_bits: int | None = None, force: bool = False,
                    progress: bool = True) -> dict:
    import shutil

    from tqdm.auto import tqdm

    from qornn.atomic import commit_dir, prepare_dir, refuse_overlap
    from qornn.export.evaluate import evaluate_artifact
    from qornn.export.exporter import export_model
    from qornn.train.checkpoint import load_run
    from qornn.train.quantizers import check_bits

    refuse_overlap(out, [run], "sensitivity output")
    model, task, _ = load_run(run)
    qat = model.act is not None  # trained with hidden-state QAT: its own widths are the base
    act_bits = act_bits if act_bits is not None else (model.act_bits if qat else 8)
    input_bits = input_bits if input_bits is not None else (model.input_bits if qat else 8)
    check_bits(act_bits, "activation bits", 2, 16)
    check_bits(input_bits, "input bits", 2, 16)
    if model.weight_bits is None:
        raise QornnError("this run has full-precision weights; sensitivity needs a quantized run")
    base = {"W": model.recurrent_bits, "U": model.input_weight_bits,
            "V": output_bits if output_bits is not None else (model.output_bits or 8), "h": act_bits, "x": input_bits}
    check_bits(base["V"], "output bits", 1, 8)
    lowest = {"W": 1, "U": 1, "V": 1, "h": 2, "x": 2}
    if budget_bits is not None and budget_bits <= 0:
        raise QornnError(f"--budget-bits must be positive, got {budget_bits}")
    sizes = {"W": model.hidden_size ** 2, "U": model.hidden_size * model.input_size,
             "V": model.output_size * model.hidden_size}
    metric = task.metric
    sign = 1 if getattr(task, "higher_is_better", True) else -1

    def measure(bits: dict) -> float:
        m = copy.deepcopy(model)
        m.recurrent_bits, m.input_weight_bits = bits["W"], bits["U"]
        as_trained = qat and (bits["h"], bits["x"]) == (model.act_bits, model.input_bits)
        art, _ = export_model(m, task, act_bits=bits["h"], input_bits=bits["x"], output_bits=bits["V"],
                              calibrate_hidden=qat and not as_trained)
        return float(evaluate_artifact(art, task, eval_batches)[metric])

    tmp = prepare_dir(out, force, marker="sensitivity.json")
    try:
        cells = [(t, k) for t in TENSORS for k in range(base[t] - 1, lowest[t] - 1, -1)]
        bar = tqdm(total=len(cells) + 1, desc="sensitivity", disable=not progress, dynamic_ncols=True)
        base_metric = measure(base)
        bar.update()
        table = {t: {base[t]: base_metric} for t in TENSORS}
        for t, k in cells:
            bar.set_postfix(tensor=t, bits=k)
            table[t][k] = measure(base | {t: k})
            bar.update()
        bar.close()
        rec = None
        if budget_bits is not None:
            rec = _allocate(base, lowest, table, sizes, budget_bits, sign)
            rec["measured"] = measure(base | rec["bits"])
        result = {"run": str(run), "task": task.name, "metric": metric, "higher_is_better": sign > 0,
                  "base_bits": base, "base_metric": base_metric, "weight_sizes": sizes,
                  "table": {t: {str(k): v for k, v in sorted(row.items(), reverse=True)} for t, row in table.items()},
                  "budget_bits": budget_bits, "recommendation": rec}
        (tmp / "sensitivity.json").write_text(json.dumps(result, indent=2) + "\n")
        (tmp / "sensitivity.md").write_text(_markdown(result))
        _plot(result, tmp / "sensitivity.png")
        commit_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _allocate(base, lowest, table, sizes, budget, sign) -> dict:
    """Greedy: lower the weight tensor with the least measured loss per weight bit saved."""
    bits = {k: base[k] for k in ("W", "U", "V")}
    if budget < sum(lowest[k] * sizes[k] for k in bits):
        raise QornnError(f"--budget-bits {budget} is below the 1-bit floor of the weights "
                         f"({sum(sizes.values())} bits)")
    steps = []
    base_metric = table["W"][base["W"]]
    while _weight_bits(bits, sizes) > budget:
        best = None
        for k in bits:
            if bits[k] <= lowest[k]:
                continue
            loss = sign * (table[k][bits[k]] - table[k][bits[k] - 1])
            per_bit = loss / sizes[k]
            if best is None or per_bit < best[0]:
                best = (per_bit, k)
        _, k = best
        bits[k] -= 1
        steps.append(f"{k} -> {bits[k]} bits")
    est = base_metric + sum(table[k][bits[k]] - base_metric for k in bits)   # one-at-a-time losses added
    return {"bits": bits, "weight_bits": _weight_bits(bits, sizes), "steps": steps, "estimated": est}


def _markdown(r: dict) -> str:
    widths = sorted({int(k) for row in r["table"].values() for k in row}, reverse=True)
    m = r["metric"]
    lines = [f"# Sensitivity of `{r['run']}` ({r['task']}, integer simulator {m}, "
             f"{'higher' if r['higher_is_better'] else 'lower'} is better)", "",
             f"Base widths {r['base_bits']}: {m} {r['base_metric']:.4f}. Each cell: the tensor alone at "
             "that width, every other tensor at its base width.", "",
             "| tensor | " + " | ".join(f"{k}-bit" for k in widths) + " |", "|---|" + "---|" * len(widths)]
    for t, row in r["table"].items():
        lines.append(f"| {t} | " + " | ".join(f"{row[str(k)]:.4f}" if str(k) in row else "" for k in widths) + " |")
    rec = r.get("recommendation")
    if rec:
        lines += ["", f"**Allocation under {r['budget_bits']} weight bits:** W {rec['bits']['W']}, "
                  f"U {rec['bits']['U']}, V {rec['bits']['V']} bits ({rec['weight_bits']} weight bits; steps: "
                  f"{', '.join(rec['steps']) or 'none'}); {m} estimated {rec['estimated']:.4f} from the "
                  f"one-at-a-time table, measured {rec['measured']:.4f}."]
    return "\n".join(lines) + "\n"


def _plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (t, row) in enumerate(r["table"].items()):
        ks = sorted(int(k) for k in row)
        ax.plot(ks, [row[str(k)] for k in ks], "o-", color=f"C{i}", label=t)
    ax.axhline(r["base_metric"], color="gray", lw=0.8, ls=":")
    ax.set_xlabel("bits of that tensor (others at base widths)")
    ax.set_ylabel(f"{r['metric']} (integer simulator)")
    ax.set_title(f"sensitivity: {r['task']}", fontsize=10)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
