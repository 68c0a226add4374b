"""Config helpers: the shared base config, `:arg` parsing, file loading and
`--config.a.b=value` overrides (ml_collections, no global absl flags), and
`validate`, which holds every rule a config's fields must keep.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os

import ml_collections as mlc

from dada_jax import backbones
from dada_jax import errors

VALUE_RANGES = {"zero_one": (0.0, 1.0), "minus_one_one": (-1.0, 1.0)}

# Kinds of a data stream (config.data.syn / real / ref, and config.eval less
# "none"); `dada_jax.data.build_source` makes a source of each.
STREAM_KINDS = ("synthetic", "folder", "paired_folders", "flist",
                "paired_flists", "tfds", "none", "builtin", "simulated",
                "rendered", "array_record")
# Paths a stream kind reads: 1 = `path`, 2 = `path` and `gt_path`.
_PATHS_NEEDED = {"folder": 1, "flist": 1, "tfds": 1, "paired_folders": 2,
                 "paired_flists": 2, "array_record": 1}
# Kind array_record (a `dada-jax prepare` folder): image_key "image" reads
# the records as stored, "lq"/"gt" one side of a paired set, clean-only.
ARRAY_RECORD_KEYS = ("image", "lq", "gt")
# config.eval's kinds besides "none" and "sidd_mat" (two .mat files).
EVAL_SOURCE_KINDS = ("paired_folders", "paired_flists", "folder", "flist",
                     "tfds", "synthetic", "builtin", "simulated", "rendered",
                     "array_record")
# A simulated stream's degradations: the keys of
# dada_jax.data.degrade.DEGRADATIONS and dada_jax.data.simulated.DOMAINS.
TASKS = ("denoise", "derain", "deblur")
DOMAINS = ("synthetic", "real")
# A rendered stream's domains (dada_jax.data.rendered.DOMAINS).
RENDERED_DOMAINS = ("clean", "synthetic", "real")
# config.eval.preset's default; SIDD is scored with its own preset unless
# config.eval.preset is set away from it (evaluate.sidd_preset).
DEFAULT_EVAL_PRESET = "rgb"
# config.train.remat_policy: "" or a jax.checkpoint_policies name.
REMAT_POLICIES = ("", "dots_saveable", "dots_with_no_batch_dims_saveable",
                  "nothing_saveable", "everything_saveable")


class ConfigError(errors.UserError):
  """A config file or override that cannot be used; the message names it."""


def parse_arg(arg: str | None, **defaults):
  """Parses 'runlocal,key=value' into a ConfigDict over `defaults`.

  A bare word sets a boolean default to True (big_vision's convention).
  """
  out = mlc.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, eq, value = item.partition("=")
    if key not in defaults:
      raise ConfigError(f"config argument {key!r} is unknown; known: "
                        f"{sorted(defaults)}")
    out[key] = True if not eq else type(defaults[key])(value)
  return out


def _blocks(networks: dict) -> dict:
  return {name: mlc.ConfigDict(dict(fields)) for name, fields in
          networks.items()}


def base_config(task: str) -> mlc.ConfigDict:
  """Fields every task config shares, at the paper's settings."""
  c = mlc.ConfigDict()
  c.task = task
  c.seed = 0
  c.dtype = "float32"

  # The architectures: every field is the attribute of the same name of
  # models.RestorationNet / models.CriticUNet (the compute dtype is `dtype`);
  # `name` picks another network, set up by its own block (see
  # dada_jax.backbones).
  c.restorer = mlc.ConfigDict(dict(
      name=backbones.DEFAULT_RESTORER, depth=4, wf=64, slope=0.2,
      last_init="kaiming", **_blocks(backbones.RESTORERS)))
  c.critic = mlc.ConfigDict(dict(
      name=backbones.DEFAULT_CRITIC, in_channels=9, out_channels=3,
      inner_channels=64, channel_mults=(1, 2, 4, 8), res_blocks=2,
      attn_res=(16,), num_head_channels=32, dropout=0.2,
      use_scale_shift_norm=True, resblock_updown=True, conv_resample=True,
      zero_init_outputs=False, **_blocks(backbones.CRITICS)))
  c.diffusion = mlc.ConfigDict(dict(
      schedule="linear", num_timesteps=1000, linear_start=1e-6,
      linear_end=1e-2, cosine_s=8e-3))
  c.objective = mlc.ConfigDict(dict(
      mode="dda", diff_weight=0.2, triplet_margin=0.1, charbonnier_eps=1e-3,
      # The paper's ablations: False turns off the per-sample channel shuffle
      # (synthetic always in the first condition slot) / the residual-swapped
      # negatives and their triplet term (dda mode).
      channel_shuffle=True, negatives=True))
  # α ramps over ramp_steps (the paper: 300 epochs); see train_step.alpha_at.
  # -1 derives them from the synthetic set: steps_per_epoch = len // batch,
  # ramp_steps = 300 epochs, α constant within an epoch, as the reference.
  c.objective.ramp_steps = -1
  c.objective.steps_per_epoch = -1

  c.optim = mlc.ConfigDict(dict(
      lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=0.0,
      ema_decay=0.9999,
      # Roles ("restorer", "critic") whose params this run does not update.
      frozen=(),
      # K > 1: each step splits data.batch_size into K microbatches (each
      # still divisible by the data-axis devices) and applies the mean of
      # their gradients in one update: less activation memory, same global
      # batch and step count. The loss is the mean of the microbatch losses:
      # the pixel and noise-MSE terms give the whole batch's gradient, the
      # triplet hinge is taken per microbatch (as at batch B/K). γ, ε and
      # the shuffle coins are the K = 1 draws; dropout masks differ. See
      # train_step.make_train_step.
      grad_accum_steps=1))

  # Each stream: kind in STREAM_KINDS (see dada_jax.data.build.build_source).
  # A clean-only synthetic stream gets online AWGN, σ ~ U[sigma_range]/255.
  stream = lambda kind: mlc.ConfigDict(dict(
      kind=kind, path="", gt_path="", split="train", data_dir="",
      image_key="image", num=64, size=160, seed=0,
      # kind simulated (and builtin: path = images_dir, size = max side):
      task="", domain="real", paired=True,
      # kind rendered (native resolution: size 0): training streams cut
      # random patches; with block_size > 0, the fixed blocks of a test set.
      block_size=0, draws=1, blocks_per_photo=0,
      # A clean-only real stream given the synthetic stream's online AWGN
      # (the sim2real control: a second synthetic stream in the real slot).
      awgn=False))
  c.data = mlc.ConfigDict(dict(
      value_range="zero_one", patch_size=128, batch_size=192,
      sigma_range=(0.0, 75.0), augment=True,
      num_workers=0, check_files=True,
      syn=stream("synthetic"), real=stream("synthetic"), ref=stream("none")))

  # Validation with the EMA restorer. kind: none | paired_folders |
  # paired_flists | sidd_mat (path = noisy blocks .mat, gt_path = ground-truth
  # blocks .mat) | a clean-only stream kind with AWGN of noise_sigma (8-bit).
  c.eval = stream("none")
  c.eval.update(preset=DEFAULT_EVAL_PRESET, max_images=0, num_samples=4,
                noise_sigma=-1.0, seed=100)

  c.train = mlc.ConfigDict(dict(
      total_steps=1_000_000, log_every=100, ckpt_every=5000, eval_every=0,
      keep_ckpts=3, async_ckpt=True, init_from="", progress_bar=True,
      tensorboard=True, max_bad_steps=20,
      # Recompute each critic ResBlock's activations in the backward pass
      # (less memory for large batches, ~1/3 more critic FLOPs); numbers are
      # unchanged. remat_policy: what remat keeps instead of recomputing, a
      # name in REMAT_POLICIES ("": only each block's inputs;
      # "dots_saveable": also conv and matmul outputs).
      remat=False, remat_policy=""))
  c.mesh = (("data", -1),)
  c.sharding = "replicate"  # or "fsdp": params sharded over 'data'
  c.predict = mlc.ConfigDict(dict(tile=512, tile_overlap=128, tile_batch=4,
                                  max_untiled_pixels=1024 * 1024))
  return c


def runlocal_models(c: mlc.ConfigDict) -> None:
  """Shrinks both networks to test size (33k and 0.8M parameters), and the
  other networks a config can name."""
  c.restorer.update(depth=3, wf=8)
  c.critic.update(inner_channels=32, channel_mults=(1, 2), res_blocks=1,
                  attn_res=(2,), num_head_channels=16)
  for block, networks in ((c.restorer, backbones.RESTORERS),
                          (c.critic, backbones.CRITICS)):
    for name in networks:
      block[name].update(backbones.RUNLOCAL[name])
  c.predict.update(tile=64, tile_overlap=16, max_untiled_pixels=128 * 128)


def runlocal(c: mlc.ConfigDict) -> None:
  """A few CPU-sized steps on built-in synthetic images: tiny models, batch 8
  of 32x32 patches, checkpoints and an evaluation along the way."""
  runlocal_models(c)
  c.data.update(batch_size=8, patch_size=32, check_files=True)
  c.data.syn.update(kind="synthetic", num=32, size=48, seed=0)
  c.data.real.update(kind="synthetic", num=32, size=48, seed=1)
  c.data.ref.update(kind="synthetic", num=32, size=48, seed=2)
  c.objective.update(steps_per_epoch=0, ramp_steps=10)
  c.eval.update(kind="synthetic", max_images=4, num_samples=2,
                noise_sigma=25.0)
  c.train.update(total_steps=6, log_every=2, ckpt_every=3, eval_every=6,
                 keep_ckpts=2, progress_bar=False)


def unet_size(size: str) -> dict:
  """The U-Net fields of the paper's size T, S or B."""
  if size not in backbones.UNET_SIZES:
    raise ConfigError(f"config argument size={size!r}: expected one of "
                      f"{sorted(backbones.UNET_SIZES)}")
  return backbones.UNET_SIZES[size]


def with_restorer(task_file: str, restorer: str, arg: str | None,
                  sizes: dict[str, dict] | None = None) -> mlc.ConfigDict:
  """`task_file`'s config with the restorer `restorer` (a backbone config).

  `arg`: 'runlocal' and 'mode=...' as the task config takes them,
  'size=NAME' (a key of `sizes`: fields of config.restorer.<restorer>),
  'critic=NAME' (config.critic.name).
  """
  a = parse_arg(arg, runlocal=False, mode="dda", critic="", size="")
  task = [f"mode={a.mode}"] + (["runlocal"] if a.runlocal else [])
  config = load_config(f"{task_file}:{','.join(task)}")
  config.restorer.name = restorer
  if a.size:
    if a.size not in (sizes or {}):
      raise ConfigError(f"config argument size={a.size!r}: expected one of "
                        f"{sorted(sizes or {})}")
    config.restorer[restorer].update(sizes[a.size])
  if a.critic:
    config.critic.name = a.critic
  return config


def load_config(spec: str, overrides: list[str] | tuple[str, ...] = ()):
  """Loads `path/to/config.py[:arg]` and applies `a.b=value` overrides.

  Returns:
    The validated config, locked: its fields can be set but none added, so a
    misspelt field is an error rather than a silently ignored new one.
  """
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"--config: no such file {path!r}")
  mod_spec = importlib.util.spec_from_file_location("_dada_config", path)
  module = importlib.util.module_from_spec(mod_spec)
  try:
    mod_spec.loader.exec_module(module)
  except Exception as e:  # a user's file: report where it failed.
    raise ConfigError(f"--config {path}: failed to import: {e!r}") from e
  if not hasattr(module, "get_config"):
    raise ConfigError(f"--config {path}: defines no get_config()")
  config = module.get_config(arg or None)
  for item in overrides:
    apply_override(config, item)
  validate(config)
  config.lock()
  return config


def apply_override(config: mlc.ConfigDict, item: str) -> None:
  """Sets one `a.b=value`; the value is parsed as a Python literal if it can
  be, and must keep the field's type."""
  key, eq, raw = item.partition("=")
  if not eq:
    raise ConfigError(f"--config.{item}: expected --config.FIELD=VALUE")
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    if p not in node or not isinstance(node[p], mlc.ConfigDict):
      raise ConfigError(f"--config.{key}: unknown field {p!r}")
    node = node[p]
  if leaf not in node:
    raise ConfigError(f"--config.{key}: unknown field; known in this "
                      f"section: {sorted(node.keys())}")
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = raw
  old = node[leaf]
  if isinstance(old, bool) != isinstance(value, bool) or (
      isinstance(old, (tuple, list)) and not isinstance(value, (tuple, list))):
    raise ConfigError(f"--config.{key}={raw}: expected a value of type "
                      f"{type(old).__name__}")
  if isinstance(old, float) and isinstance(value, int):
    value = float(value)
  if isinstance(old, (tuple, list)):
    value = type(old)(value)
  try:
    node[leaf] = value
  except TypeError as e:
    raise ConfigError(f"--config.{key}={raw}: expected a value of type "
                      f"{type(old).__name__}") from e


def stream_paired(stream: mlc.ConfigDict) -> bool:
  """Whether a stream's items are (degraded, clean) pairs, by its kind (and
  for kind array_record, its image_key and the folder's manifest.json)."""
  if stream.kind == "array_record":
    if stream.image_key != "image":
      return False
    try:
      with open(os.path.join(stream.path, "manifest.json"),
                encoding="utf-8") as f:
        return bool(json.load(f).get("paired"))
    except (OSError, ValueError, AttributeError):
      return False  # the source reports the missing or bad manifest
  return stream.kind in ("paired_folders", "paired_flists") or (
      stream.kind in ("simulated", "rendered") and bool(stream.paired))


def stream_problem(stream: mlc.ConfigDict, name: str) -> str | None:
  """What makes a data stream unusable as configured, or None.

  Args:
    stream: a stream ConfigDict (see `base_config`): its `kind`, the paths
      that kind reads, and a simulated stream's `task` and `domain`.
    name: the config field, for the message (e.g. "config.data.real").

  Returns:
    A one-line message naming the field, or None when the stream is usable.
  """
  kind = stream.kind
  if kind not in STREAM_KINDS:
    return f"{name}.kind={kind!r}: expected one of {STREAM_KINDS}"
  need = _PATHS_NEEDED.get(kind, 0)
  if need >= 1 and not stream.path:
    return f"{name}.path is empty (kind {kind!r} needs it)"
  if need == 2 and not stream.gt_path:
    return f"{name}.gt_path is empty (kind {kind!r} needs it)"
  if kind == "array_record" and stream.image_key not in ARRAY_RECORD_KEYS:
    return (f"{name}.image_key={stream.image_key!r}: kind 'array_record' "
            f"reads one of {ARRAY_RECORD_KEYS}")
  if kind in ("simulated", "rendered"):
    task, domain = stream.get("task"), stream.get("domain")
    domains = DOMAINS if kind == "simulated" else RENDERED_DOMAINS
    if not task:
      return (f"{name}.task is empty (kind {kind!r} needs it: one of "
              f"{sorted(TASKS)})")
    if task not in TASKS or domain not in domains:
      known = [f"{t}/{d}" for t in TASKS for d in domains]
      return (f"{name}: unknown degradation {task}/{domain}; known: "
              f"{', '.join(known)}")
  return None


def _check_stream(stream: mlc.ConfigDict, name: str) -> None:
  problem = stream_problem(stream, name)
  if problem:
    raise ConfigError(problem)


def _check_eval_source(config: mlc.ConfigDict) -> None:
  """config.eval read as a dataset: its kind, paths and noise level."""
  e = config.eval
  if e.kind not in EVAL_SOURCE_KINDS:
    raise ConfigError(f"config.eval.kind={e.kind!r}: expected one of "
                      f"{('none', *EVAL_SOURCE_KINDS, 'sidd_mat')}")
  _check_stream(e, "config.eval")
  if not stream_paired(e) and e.noise_sigma < 0:
    raise ConfigError(f"config.eval: kind {e.kind} is clean-only; set "
                      "noise_sigma >= 0 (8-bit units)")


def _check_training(config: mlc.ConfigDict, num_devices: int) -> None:
  """The rules a training run adds: batch split, patch size, streams."""
  d, t, mode = config.data, config.train, config.objective.mode
  if d.batch_size % num_devices:
    raise ConfigError(f"config.data.batch_size={d.batch_size} is not "
                      f"divisible by the {num_devices} devices of the data "
                      "axis")
  k = config.optim.get("grad_accum_steps", 1)
  if d.batch_size % (k * num_devices):
    raise ConfigError(
        f"config.optim.grad_accum_steps={k}: config.data.batch_size="
        f"{d.batch_size} does not split into {k} equal microbatches each "
        f"divisible by the {num_devices} devices of the data axis; "
        f"batch_size must be a multiple of {k} x {num_devices} = "
        f"{k * num_devices}")
  # The restorer's and the critic's total downsampling.
  multiple = backbones.patch_multiple(config)
  if d.patch_size % multiple:
    raise ConfigError(f"config.data.patch_size={d.patch_size} must be a "
                      f"multiple of {multiple} (the restorer's and the "
                      "critic's downsampling)")
  if mode == "dda_ex" and d.ref.kind == "none":
    raise ConfigError("config.objective.mode='dda_ex' needs a clean "
                      "reference stream: set config.data.ref.kind")
  for name in ("total_steps", "log_every", "ckpt_every", "max_bad_steps"):
    if t[name] <= 0:
      raise ConfigError(f"config.train.{name}={t[name]} must be positive")
  if config.eval.kind not in ("none", "sidd_mat"):
    _check_eval_source(config)
  _check_stream(d.syn, "config.data.syn")
  if mode != "vanilla":
    _check_stream(d.real, "config.data.real")
  if mode == "dda_ex":
    _check_stream(d.ref, "config.data.ref")
  if d.syn.kind == "none" or (mode != "vanilla" and d.real.kind == "none"):
    raise ConfigError("config.data.syn and config.data.real need a kind")
  if d.real.get("awgn") and (stream_paired(d.real) or (
      d.real.kind in ("simulated", "rendered") and d.real.domain != "clean")):
    raise ConfigError("config.data.real.awgn adds AWGN to clean images: the "
                      "real stream must be clean-only and unpaired (e.g. kind "
                      "'rendered', domain 'clean', paired=False)")
  if d.syn.kind == "rendered" and -1 in (config.objective.steps_per_epoch,
                                         config.objective.ramp_steps):
    raise ConfigError("config.objective.steps_per_epoch/ramp_steps=-1 count "
                      "epochs of the synthetic set, but a rendered stream "
                      "draws fresh patches without end: set steps_per_epoch=0"
                      " and ramp_steps")


def validate(config: mlc.ConfigDict, *, num_devices: int | None = None,
             eval_source: bool = False) -> None:
  """Checks a config's fields, each rule raising a ConfigError naming them.

  Always: the fields the models, objective and restoration depend on. The
  data streams are checked only where they will be read, so that commands
  which read none (restore, convert, evaluate --input) take a task config
  whose data paths are left to the training command line.

  Args:
    config: a config from `base_config` and a task's `get_config`.
    num_devices: given for a run about to train on a data axis of this many
      devices: then also the training rules (batch divisible by the devices,
      and into optim.grad_accum_steps microbatches divisible by them,
      patch a multiple of both networks' downsampling, positive train
      intervals, the streams the objective mode reads, and config.eval as
      the periodic evaluation reads it).
    eval_source: also check config.eval as a dataset (kind other than
      "none" or "sidd_mat"): its kind, paths, and noise_sigma >= 0 for a
      clean-only kind.

  Raises:
    ConfigError: the first rule broken; the message names the field.
  """
  from dada_jax import diffusion  # pylint: disable=g-import-not-at-top
  if config.data.value_range not in VALUE_RANGES:
    raise ConfigError(f"config.data.value_range={config.data.value_range!r}: "
                      f"expected one of {sorted(VALUE_RANGES)}")
  if config.objective.mode not in ("vanilla", "dda", "dda_ex"):
    raise ConfigError(f"config.objective.mode={config.objective.mode!r}: "
                      "expected 'vanilla', 'dda' or 'dda_ex'")
  if config.diffusion.schedule not in diffusion.SCHEDULES:
    raise ConfigError(f"config.diffusion.schedule="
                      f"{config.diffusion.schedule!r}: expected one of "
                      f"{list(diffusion.SCHEDULES)}")
  if config.dtype not in ("float32", "bfloat16"):
    raise ConfigError(f"config.dtype={config.dtype!r}: expected 'float32' "
                      "or 'bfloat16'")
  policy = config.train.get("remat_policy", "")
  if policy not in REMAT_POLICIES:
    raise ConfigError(f"config.train.remat_policy={policy!r}: expected one "
                      f"of {list(REMAT_POLICIES)}")
  if policy and not config.train.remat:
    raise ConfigError(f"config.train.remat_policy={policy!r} applies only "
                      "with config.train.remat=True")
  for block, known in ((config.restorer, backbones.RESTORERS),
                       (config.critic, backbones.CRITICS)):
    name = block.get("name")
    default = (backbones.DEFAULT_RESTORER if block is config.restorer
               else backbones.DEFAULT_CRITIC)
    if name != default and name not in known:
      role = "restorer" if block is config.restorer else "critic"
      raise ConfigError(f"config.{role}.name={name!r}: expected one of "
                        f"{[default, *known]}")
  if backbones.critic_name(config) == "sr3":
    sr3 = config.critic.sr3
    widths = [m * sr3.inner_channel for m in sr3.channel_mults]
    if sr3.in_channel != 9 or any(w % sr3.norm_groups for w in widths):
      raise ConfigError(f"config.critic.sr3: in_channel must be 9 (is "
                        f"{sr3.in_channel}) and norm_groups="
                        f"{sr3.norm_groups} must divide every level width "
                        f"{widths}")
  widths = [m * config.critic.inner_channels
            for m in config.critic.channel_mults]
  if any(w % 32 for w in widths):
    raise ConfigError("config.critic: every level width (inner_channels x "
                      f"mult = {widths}) must be a multiple of 32 for "
                      "GroupNorm(32)")
  for field, least in (("data.batch_size", 1), ("data.patch_size", 1),
                       ("optim.grad_accum_steps", 1),
                       ("restorer.depth", 1), ("restorer.wf", 1),
                       ("critic.inner_channels", 1), ("critic.res_blocks", 1),
                       ("predict.tile", 0), ("predict.tile_overlap", 0),
                       ("predict.tile_batch", 1),
                       ("predict.max_untiled_pixels", 0)):
    section, name = field.split(".")
    value = config[section][name]
    if value < least:
      raise ConfigError(f"config.{field}={value}: must be >= {least}")
  if num_devices is not None:
    _check_training(config, num_devices)
  if eval_source:
    _check_eval_source(config)
