#!/usr/bin/env python3
"""Draws docs/architecture.md's two diagrams as plain SVG (no dependencies):

* docs/img/crates.svg: the workspace's crates and which of them each one depends on, read from
  the crates' Cargo.toml files (the [dependencies] tables, target-specific ones included; not
  dev-dependencies). Each crate is a <g> with data-crate and data-deps attributes, which
  crates/cli/tests/guides.rs compares with the Cargo.toml files: add a dependency between
  crates and the test asks for this script to be run again.
* docs/img/train-step.svg: one optimizer step's data flow, naming the types and functions that
  carry it (the same test checks that each name exists in the code).

Run from anywhere: python3 scripts/architecture_svgs.py (--check: only say whether the
committed drawings are current).
"""

import pathlib
import re
import sys
from xml.sax.saxutils import escape

ROOT = pathlib.Path(__file__).resolve().parent.parent
IMG = ROOT / "docs" / "img"

FONT = "font-family=\"-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif\""
MONO = "font-family=\"ui-monospace, 'SFMono-Regular', Menlo, Consolas, monospace\""

# Colours by role: the CPU's arithmetic, the model, training, GPUs, tools.
ROLE = {
    "cpu": ("#e8f1fb", "#2f6db5"),
    "model": ("#eaf6ec", "#2e8540"),
    "train": ("#fff4e0", "#b7791f"),
    "gpu": ("#f3ebfa", "#7b4bb3"),
    "tool": ("#f1f1f1", "#555555"),
}


def crate_deps():
    """{crate dir name: [ferrogpt crates it depends on]}, from each crates/*/Cargo.toml."""
    names = {}
    deps = {}
    for toml in sorted((ROOT / "crates").glob("*/Cargo.toml")):
        text = toml.read_text()
        package = re.search(r'^name\s*=\s*"([^"]+)"', text, re.M).group(1)
        names[package] = toml.parent.name
    for package, d in names.items():
        text = (ROOT / "crates" / d / "Cargo.toml").read_text()
        found = []
        table = None
        for line in text.splitlines():
            m = re.match(r"^\s*\[(.+)\]\s*$", line)
            if m:
                table = m.group(1)
                continue
            if table is None or not table.endswith("dependencies") or "dev-dependencies" in table:
                continue
            m = re.match(r"^\s*([A-Za-z0-9_-]+)", line)
            if m and m.group(1) in names and names[m.group(1)] not in found:
                found.append(names[m.group(1)])
        deps[d] = found
    return deps


def text_lines(x, y, lines, size, anchor="middle", weight="normal", mono=False, fill="#222"):
    """One <text> per line, 1.3 × size apart, starting at baseline y."""
    out = []
    fam = MONO if mono else FONT
    for i, line in enumerate(lines):
        # SVG collapses spaces: a left-aligned line's indentation becomes an x offset.
        indent = len(line) - len(line.lstrip(" ")) if anchor == "start" else 0
        line = line.lstrip(" ") if indent else line
        out.append(
            f'<text x="{x + indent * size * 0.6:.1f}" y="{y + i * size * 1.3:.1f}" {fam} '
            f'font-size="{size}" '
            f'font-weight="{weight}" text-anchor="{anchor}" fill="{fill}">{escape(line)}</text>'
        )
    return out


def arrow_marker(ident, colour):
    return (
        f'<marker id="{ident}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
        f'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        f'fill="{colour}"/></marker>'
    )


def svg(width, height, body, title, desc):
    head = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="title desc">',
        f'<title id="title">{escape(title)}</title>',
        f'<desc id="desc">{escape(desc)}</desc>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    return "\n".join(head + body + ["</svg>", ""])


# ---------------------------------------------------------------------------------------------
# The crates

# Per crate: role, position of the box's centre, and two lines on what it is for.
CRATES = {
    "cli": ("tool", (555, 62), "ferrogpt", [
        "the binary: one cmd_*.rs per subcommand; picks the engine per --device",
        "depends on all eight crates below",
    ]),
    "report": ("tool", (150, 196), "ferrogpt-report", [
        "saved bench results of many",
        "machines: one HTML page + Markdown",
    ]),
    "wgpu": ("gpu", (420, 196), "ferrogpt-wgpu", [
        "WGSL matmul rungs on any GPU;",
        "GPT-2 forward for sample/eval",
    ]),
    "gpu": ("gpu", (690, 196), "ferrogpt-gpu", [
        "GpuModel, GpuEngine: every layer",
        "in CUDA kernels; cuBLAS(Lt), NCCL",
    ]),
    "cuda": ("gpu", (960, 196), "ferrogpt-cuda", [
        "the GPU matmul ladder: our",
        "CUDA kernels beside cuBLAS",
    ]),
    "gemm": ("cpu", (150, 400), "ferrogpt-gemm", [
        "the CPU matmul ladder (Level,",
        "matmul), GEMV kernels, hw detection",
    ]),
    "core": ("cpu", (420, 400), "ferrogpt-core", [
        "ops, forward and backward side",
        "by side; the autodiff Tape",
    ]),
    "model": ("model", (690, 400), "ferrogpt-model", [
        "GptConfig, ParamLayout, Gpt; KV",
        "cache, safetensors, GGUF, int8",
    ]),
    "train": ("train", (960, 400), "ferrogpt-train", [
        "Engine, CpuEngine, Trainer; data,",
        "tokenizers, AdamW, checkpoints, dist",
    ]),
}
BOX_W, BOX_H = 224, 76


def crates_svg():
    deps = crate_deps()
    assert set(deps) == set(CRATES), f"crates on disk {sorted(deps)} != drawn {sorted(CRATES)}"
    width, height = 1110, 600
    body = ["<defs>", arrow_marker("arrow", "#444"), arrow_marker("arrow-grey", "#999"), "</defs>"]
    edges = []
    # The bottom row's dependencies between neighbours are short arrows; the others are arcs
    # under the row (model → gemm, train → core, train → gemm) or lines from the GPU row down.
    row = ["gemm", "core", "model", "train"]
    for user, used in sorted((u, d) for u, ds in deps.items() for d in ds):
        if user == "cli":
            continue  # stated in its box: it uses every crate
        (ux, uy), (dx, dy) = CRATES[user][1], CRATES[used][1]
        if user in row and used in row:
            i, j = row.index(user), row.index(used)
            if abs(i - j) == 1:
                x1, x2 = ux - BOX_W / 2, dx + BOX_W / 2
                path = f"M{x1},{uy} L{x2 + 2},{dy}"
            else:
                # (start offset, end offset, depth) per arc, so that no two overlap.
                a, e, depth = {
                    ("model", "gemm"): (-30, 60, 60),
                    ("train", "core"): (-40, 30, 60),
                    ("train", "gemm"): (0, 0, 105),
                }[(user, used)]
                x1, x2 = ux + a, dx + e
                y0 = uy + BOX_H / 2
                path = (
                    f"M{x1},{y0} C{x1},{y0 + depth} {x2},{y0 + depth} {x2},{y0 + 4}"
                )
        else:
            # From the user's bottom edge (spread by target) to the used crate's top.
            spread = {"gemm": -60, "core": -20, "model": 20, "train": 60, "cuda": 0}[used]
            x1, y1 = ux + spread * 0.8, uy + BOX_H / 2
            x2, y2 = dx + (ux - dx) * 0.12, dy - BOX_H / 2 - 3
            if used == "cuda":
                x1, y1, x2, y2 = ux + BOX_W / 2, uy, dx - BOX_W / 2 - 3, dy
            path = f"M{x1:.1f},{y1:.1f} L{x2:.1f},{y2:.1f}"
        edges.append(
            f'<path d="{path}" fill="none" stroke="#444" stroke-width="1.6" '
            f'marker-end="url(#arrow)"><title>{escape(CRATES[user][2])} depends on '
            f"{escape(CRATES[used][2])}</title></path>"
        )
    body += edges
    for name, (role, (cx, cy), package, lines) in CRATES.items():
        fill, stroke = ROLE[role]
        w = 1050 if name == "cli" else BOX_W
        x, y = cx - w / 2, cy - BOX_H / 2
        dep_list = " ".join(deps[name])
        body.append(f'<g data-crate="{name}" data-deps="{dep_list}">')
        body.append(
            f"<title>crates/{name} ({escape(package)}): depends on "
            f"{escape(', '.join(deps[name]) or 'no other ferrogpt crate')}</title>"
        )
        body.append(
            f'<rect x="{x}" y="{y}" width="{w}" height="{BOX_H}" rx="8" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.5"/>'
        )
        head = f"crates/{name}" if name != "cli" else "crates/cli"
        body += text_lines(cx, y + 22, [head], 15, weight="bold", mono=True, fill=stroke)
        if name == "cli":
            body += text_lines(cx, y + 44, ["  ·  ".join(lines)], 13)
            body += text_lines(cx, y + 64, ["package: ferrogpt"], 11, fill="#666")
        else:
            body += text_lines(cx, y + 41, lines, 12)
        body.append("</g>")
    # Legend.
    lx, ly = 30, 560
    items = [("cpu", "CPU arithmetic"), ("model", "the model"), ("train", "training"),
             ("gpu", "GPUs"), ("tool", "tools")]
    for role, label in items:
        fill, stroke = ROLE[role]
        body.append(
            f'<rect x="{lx}" y="{ly}" width="16" height="12" rx="2" fill="{fill}" '
            f'stroke="{stroke}"/>'
        )
        body += text_lines(lx + 22, ly + 11, [label], 12, anchor="start")
        lx += 150
    body += text_lines(1080, ly + 11, ["A → B: A depends on B (Cargo.toml)"], 12, anchor="end",
                       fill="#444")
    return svg(width, height, body, "ferrogpt's crates and their dependencies",
               "Each box is a crate of the workspace; an arrow from A to B means A's Cargo.toml "
               "depends on B. The binary, crates/cli, depends on every other crate.")


# ---------------------------------------------------------------------------------------------
# One training step

def box(x, y, w, h, role, title, lines, mono_title=True, size=12):
    fill, stroke = ROLE[role]
    out = [
        f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="8" fill="{fill}" '
        f'stroke="{stroke}" stroke-width="1.5"/>'
    ]
    out += text_lines(x + 12, y + 21, [title], 14, anchor="start", weight="bold",
                      mono=mono_title, fill=stroke)
    out += text_lines(x + 12, y + 41, lines, size, anchor="start", mono=True)
    return out


def line(x1, y1, x2, y2, label=None, dashed=False, lx=None, ly=None, anchor="start"):
    dash = ' stroke-dasharray="5,4"' if dashed else ""
    out = [
        f'<path d="M{x1},{y1} L{x2},{y2}" stroke="#444" stroke-width="1.6" fill="none"'
        f'{dash} marker-end="url(#arrow)"/>'
    ]
    if label:
        out += text_lines(lx if lx is not None else x1 + 8, ly if ly is not None else
                          (y1 + y2) / 2 + 4, [label], 11, anchor=anchor, mono=True,
                          fill="#333")
    return out


def train_step_svg():
    width, height = 1060, 900
    b = ["<defs>", arrow_marker("arrow", "#444"), "</defs>"]
    b += text_lines(30, 34, ["One optimizer step: Trainer::train_step (crates/train/src/trainer)"],
                    17, anchor="start", weight="bold")
    b += text_lines(30, 56, ["zero_grads; grad_accum micro-batches on each rank; all_reduce_grads; "
                             "clip_grads; update. Evaluation and a checkpoint every "
                             "eval_interval steps."], 12, anchor="start", fill="#444")
    # 1. Data and schedule.
    b += box(30, 78, 480, 96, "train", "data: Dataset or ShardSet", [
        "text → Tokenizer::encode → u32 ids, 90% / 10%",
        "or llm.c token shards, memory-mapped",
        "Batcher::next_batch / ShardLoader::next_batch",
    ])
    b += box(550, 78, 480, 96, "train", "schedule", [
        "learning_rate(cfg, step) → lr",
        "warmup, then cosine, linear or constant",
        "Engine::zero_grads()",
    ])
    b += line(270, 174, 270, 214, "inputs, targets: u32 (B, T)", lx=282, ly=200)
    # 2. accumulate, on one of two engines.
    b.append('<rect x="20" y="216" width="1020" height="240" rx="10" fill="none" '
             'stroke="#999" stroke-dasharray="6,4"/>')
    b += text_lines(34, 238, ["× grad_accum micro-batches: "
                              "Engine::accumulate(inputs, targets, t, scale, seed) → mean loss"],
                    14, anchor="start", weight="bold", mono=True, fill="#333")
    b += box(34, 252, 480, 190, "cpu", "CpuEngine (--device cpu)", [
        "data-parallel shards over threads (shards_for):",
        "  Tape::reset, then Gpt::loss records the",
        "  forward pass on the Tape: embedding,",
        "  layernorm | rmsnorm, linear, rope, attention,",
        "  gelu | swiglu, add, softmax_cross_entropy",
        "  every product: ferrogpt_gemm::matmul at",
        "  the --matmul Level (simd, amx, ...)",
        "Tape::backward_scaled → gradients, flat,",
        "  in ParamLayout order; the shards summed",
    ])
    b += box(546, 252, 480, 190, "gpu", "GpuEngine (--device cuda)", [
        "GpuModel::accumulate: token ids up, one f32 back",
        "  forward.rs: embedding, attention (flash),",
        "  MLP, head; kernels/*.cu compiled by NVRTC",
        "  products: cuBLAS, cuBLASLt epilogues",
        "  activations: one arena (acts.rs);",
        "  --recompute shares and recomputes some",
        "  backward.rs: the same layers in reverse",
        "--dtype fp32 | tf32 | bf16; weights, gradients",
        "  and AdamW state stay on the GPU",
    ])
    # 3. The gradients' sum across ranks.
    y = 456
    b += line(270, y, 270, y + 36, "gradients", lx=282, ly=y + 24)
    b += line(786, y, 786, y + 36, "gradients (on the GPU)", lx=798, ly=y + 24)
    y += 38
    b += box(30, y, 1000, 68, "train", "Engine::all_reduce_grads(&dyn Collective)", [
        "data-parallel runs only (one rank: Solo, nothing to do). CPU ranks: Mpi,",
        "all_reduce_sum_f32, or reduce_scatter_sum_f32 under --zero 1. GPU ranks: Nccl.",
    ])
    y += 68
    b += line(530, y, 530, y + 26)
    y += 28
    # 4. Clip.
    b += box(30, y, 1000, 68, "train", "Engine::clip_grads(grad_clip) → norm", [
        "CPU: global_norm, clip_factor (optim.rs), the factor folded into the update.",
        "GPU: GpuModel::grad_norm (one f32 back), the factor folded into the update.",
    ])
    y += 68
    b += line(530, y, 530, y + 26, "lr", lx=542, ly=y + 18)
    y += 28
    # 5. Update.
    b += box(30, y, 1000, 68, "train", "Engine::update(lr, cfg)", [
        "CPU: Optimizer::step, AdamW or SGD on the flat buffers (ZeRO-1: this rank's",
        "block, then all_gather_f32).  GPU: GpuModel::update, one fused AdamW kernel.",
    ])
    y += 68
    b += line(270, y, 270, y + 26)
    b += line(790, y, 790, y + 26, "every eval_interval steps", lx=802, ly=y + 18)
    y += 28
    # 6. What the step leaves behind.
    b += box(30, y, 480, 96, "tool", "metrics", [
        "StepMetrics → runs/<name>/metrics.jsonl:",
        "step, train_loss, lr, grad_norm,",
        "tokens_per_sec, elapsed_s, tokens, val_loss",
    ], mono_title=False)
    b += box(550, y, 480, 96, "tool", "evaluate and checkpoint", [
        "Trainer::evaluate → Engine::losses",
        "Trainer::save_in_background → checkpoint::save",
        "model.safetensors, optimizer.safetensors,",
        "state.json, best/",
    ], mono_title=False)
    assert y + 96 < height, y
    return svg(width, height, b, "One training step in ferrogpt",
               "The data flow of one optimizer step: batches from the data loader, forward and "
               "backward on the CPU engine's tape or on the GPU engine, the gradients summed "
               "across ranks, clipped, the AdamW update, then metrics and checkpoints.")


def main():
    drawings = {"crates.svg": crates_svg(), "train-step.svg": train_step_svg()}
    if sys.argv[1:] == ["--check"]:
        stale = [n for n, s in drawings.items()
                 if not (IMG / n).exists() or (IMG / n).read_text() != s]
        if stale:
            sys.exit(f"docs/img/{', '.join(stale)} differ from what this script draws: run "
                     "python3 scripts/architecture_svgs.py")
        return
    IMG.mkdir(parents=True, exist_ok=True)
    for name, s in drawings.items():
        (IMG / name).write_text(s)
    print("wrote docs/img/" + " and docs/img/".join(drawings))


if __name__ == "__main__":
    main()
