"""`dada-jax bench --profile DIR`: where a train step's time goes, by op class.

Ours: one train step (after compilation and warm-up calls) under
`jax.profiler.trace(DIR/jax_MODE_DTYPE)`. The XLA runtime records one event
per executed HLO instruction (fusion, convolution, copy, ...), named as in
the compiled program: on a CPU in the host threads' planes, on a GPU in the
device planes (then the only ones read). An instruction is classed by what it,
or the computation it fuses, computes and by the JAX op that made it; the
first class that matches, in this order, wins (a dropout mask fused into a
GroupNorm gradient counts as RNG):

  conv forward / conv input-grad / conv weight-grad
      a convolution; a weight gradient is one whose window spans the image
      (the networks' kernels are at most 3x3), an input gradient is under
      `transpose(...)` in the op name (on a GPU: cuDNN's call target).
  matmul        dot (attention, the restorer's upsampling matrices, linear).
  RNG           threefry/random bits (dropout masks, noise, shuffles).
  optimizer     Adam and the EMA update.
  normalisation GroupNorm / LayerNorm statistics and scaling.
  copies        copies, transposes, concatenation, padding, slicing.
  elementwise   everything else (activations, losses, reductions).

On a CPU, XLA runs Eigen convolutions (see dada_jax.xla_cpu) as asynchronous
tasks whose time is in no op's event: `CPU time in no op event` is the
process's CPU time during the step less the ops' summed durations, i.e.
those convolutions (every role) and runtime overhead.

The reference's step (`--torch-reference`) runs once more under
`torch.profiler` (DIR/torch_MODE/trace.json); its aten ops are classed by
name with their self time, its convolution backward (input and weight
gradient in one aten op) in one row. Durations are summed over ops, so where
ops overlap (XLA runs independent ops concurrently) the sum can exceed the
step's wall time; `cores used` is the process's CPU time over wall time
during the profiled step.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import resource
import time

import jax

UNTRACED = "CPU time in no op event"
CLASSES = ("conv forward", "conv input-grad", "conv weight-grad",
           "conv backward (input + weight)", "matmul", "normalisation", "RNG",
           "optimizer + EMA", "copies, transposes, concat/pad", "elementwise",
           UNTRACED)
_COPY_OPS = {"copy", "transpose", "parameter", "bitcast", "slice",
             "concatenate", "pad", "reshape", "broadcast", "dynamic-slice",
             "dynamic-update-slice", "tuple", "get-tuple-element"}
# cuDNN convolutions (GPU programs): the custom call names the role.
_CUDNN_CONV = {"__cudnn$convForward": "convolution",
               "__cudnn$convBiasActivationForward": "convolution",
               "__cudnn$convBackwardInput": "conv-input-grad",
               "__cudnn$convBackwardFilter": "conv-weight-grad"}
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT )?%([\w.\-]+) = \S+ ([\w\-]+)\((.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{$")


def _instructions(hlo_text: str) -> tuple[dict, dict]:
  """({instruction: (opcode, called computation, op_name, window)},
  {computation: [its instructions]}) of an HLO module's text."""
  table, bodies, current = {}, {}, None
  for line in hlo_text.splitlines():
    m = _COMPUTATION.match(line)
    if m:
      current = bodies.setdefault(m.group(1), [])
      continue
    m = _INSTRUCTION.match(line)
    if m and current is not None:
      calls = re.search(r"calls=%([\w.\-]+)", line)
      op_name = re.search(r'op_name="([^"]*)"', line)
      window = re.search(r"window=\{size=([\dx]+)", line)
      target = re.search(r'custom_call_target="([^"]*)"', line)
      opcode = m.group(2)
      if target and "conv" in target.group(1).lower():
        opcode = _CUDNN_CONV.get(target.group(1), "convolution")
      table[m.group(1)] = (opcode, calls and calls.group(1),
                           op_name.group(1) if op_name else "",
                           window.group(1) if window else "")
      current.append(m.group(1))
  return table, bodies


def hlo_classifier(hlo_text: str):
  """Returns classify(instruction name) -> one of CLASSES, or None when the
  name is not an instruction of the program (runtime bookkeeping events)."""
  table, bodies = _instructions(hlo_text)

  def classify(name: str) -> str | None:
    if name not in table:
      return None
    opcode, calls, op_name, _ = table[name]
    inner = [table[i] for i in bodies.get(calls, ())] if calls else []
    ops = {opcode} | {i[0] for i in inner}
    names = " ".join([op_name] + [i[2] for i in inner])
    if "conv-weight-grad" in ops:
      return "conv weight-grad"
    if "conv-input-grad" in ops:
      return "conv input-grad"
    convs = [i for i in inner + [table[name]] if i[0] == "convolution"]
    if convs:
      _, _, conv_op_name, window = convs[0]
      if any(int(s) > 7 for s in window.split("x") if s):
        return "conv weight-grad"  # its window is the image (3x3 kernels)
      return ("conv input-grad" if "transpose(" in conv_op_name
              else "conv forward")
    if "dot" in ops:
      return "matmul"
    if re.search(r"threefry|random_bits|random_wrap|bernoulli", names):
      return "RNG"
    if re.search(r"adam|optax|scale_by|ema", names, re.IGNORECASE):
      return "optimizer + EMA"
    if re.search(r"norm", names, re.IGNORECASE):
      return "normalisation"
    if ops <= _COPY_OPS | {"fusion"} and (ops - {"fusion"}) <= _COPY_OPS:
      return "copies, transposes, concat/pad"
    return "elementwise"

  return classify


def torch_class(name: str) -> str:
  """The class of an aten op name (torch.profiler key)."""
  n = name.lower()
  if "convolution_backward" in n:
    return "conv backward (input + weight)"
  if "conv" in n:
    return "conv forward"
  if re.search(r"\b(aten::)?(mm|bmm|addmm|matmul|linear|einsum|baddbmm)\b", n):
    return "matmul"
  if re.search(r"bernoulli|dropout|rand|normal_|randperm", n):
    return "RNG"
  if re.search(r"_foreach|adam|addcdiv|lerp|sqrt_", n):
    return "optimizer + EMA"
  if "norm" in n:
    return "normalisation"
  if re.search(r"copy|cat|contiguous|clone|transpose|permute|pad|slice|"
               r"index|upsample|to_copy|empty|zero", n):
    return "copies, transposes, concat/pad"
  return "elementwise"


def _cpu_seconds() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def profile_jax_step(call, hlo_text: str, out_dir: str) -> dict:
  """Runs `call()` (one synchronised step) under the JAX profiler.

  Returns {"seconds": {class: s}, "wall_s", "cores_used", "trace"}.
  """
  os.makedirs(out_dir, exist_ok=True)
  cpu0, wall0 = _cpu_seconds(), time.perf_counter()
  with jax.profiler.trace(out_dir):
    jax.block_until_ready(call())
  wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
  trace = sorted(glob.glob(os.path.join(out_dir, "**", "*.xplane.pb"),
                           recursive=True))[-1]
  classify = hlo_classifier(hlo_text)
  seconds = collections.Counter()
  planes = list(jax.profiler.ProfileData.from_file(trace).planes)
  # On accelerators the device planes time each op; host planes only launch.
  devices = [p for p in planes if p.name.startswith("/device:")]
  for plane in devices or planes:
    for line in plane.lines:
      for event in line.events:
        c = classify(event.name)
        if c is not None:
          seconds[c] += event.duration_ns / 1e9
  if not devices:
    # XLA:CPU runs Eigen convolutions as asynchronous tasks: their time is in
    # no op's event, only in the process's CPU time.
    seconds[UNTRACED] = max(cpu - sum(seconds.values()), 0.0)
  return {"seconds": dict(seconds), "wall_s": wall, "cores_used": cpu / wall,
          "trace": trace}


def profile_torch_step(torch, step, out_dir: str) -> dict:
  """Runs the reference's `step()` once under torch.profiler (CPU ops).

  Returns {"seconds": {class: s}, "wall_s", "cores_used", "trace"}.
  """
  os.makedirs(out_dir, exist_ok=True)
  cpu0, wall0 = _cpu_seconds(), time.perf_counter()
  with torch.profiler.profile(
      activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    step()
  wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
  trace = os.path.join(out_dir, "trace.json")
  prof.export_chrome_trace(trace)
  seconds = collections.Counter()
  for event in prof.key_averages():
    if event.key.startswith("aten::") and event.self_cpu_time_total > 0:
      seconds[torch_class(event.key)] += event.self_cpu_time_total / 1e6
  return {"seconds": dict(seconds), "wall_s": wall, "cores_used": cpu / wall,
          "trace": trace}


def table(ours: dict, reference: dict | None = None) -> str:
  """Markdown: seconds and share per class, ours beside the reference's."""
  def cells(p, c):
    if p is None:
      return "- | -"
    s, total = p["seconds"].get(c, 0.0), sum(p["seconds"].values()) or 1.0
    return f"{s:.2f} | {100 * s / total:.0f}%"
  rows = ["| op class | ours s | ours share | reference s | reference share |",
          "| --- | --- | --- | --- | --- |"]
  for c in CLASSES:
    if c in ours["seconds"] or (reference and c in reference["seconds"]):
      rows.append(f"| {c} | {cells(ours, c)} | {cells(reference, c)} |")
  footer = {"sum over ops": lambda p: sum(p["seconds"].values()),
            "step wall": lambda p: p["wall_s"],
            "cores used": lambda p: p["cores_used"]}
  for label, value in footer.items():
    theirs = f"{value(reference):.2f}" if reference else "-"
    rows.append(f"| {label} | {value(ours):.2f} | | {theirs} | |")
  if UNTRACED in ours["seconds"]:
    rows.append("\nours: op durations and the process's CPU time in no op "
                "event (asynchronous Eigen convolutions, runtime and profiler "
                "overhead), together the step's CPU seconds; the reference: "
                "aten self times. Profiled steps run slower than timed ones.")
  return "\n".join(rows)
