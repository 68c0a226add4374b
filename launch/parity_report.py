"""Prints how closely dada-jax reproduces the PyTorch reference, as a table.

Reads the recorded reference run in tests/fixtures/noise_da_small.npz (or
--fixture PATH) and reports max relative errors of every ported piece:

  python launch/parity_report.py [--fixture tests/fixtures/noise_da_small.npz]
"""

import argparse
import functools
import json
import pathlib
import sys

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
jax.config.update("jax_default_matmul_precision", "highest")

from conftest import nhwc, small_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from dada_jax import diffusion, objective, predict  # pylint: disable=g-import-not-at-top,wrong-import-position
from dada_jax.torch_io import convert  # pylint: disable=g-import-not-at-top,wrong-import-position
from dada_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from dada_jax.models import layers  # pylint: disable=g-import-not-at-top,wrong-import-position


def rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--fixture", default=str(REPO / "tests/fixtures/noise_da_small.npz"))
  args = p.parse_args()
  with np.load(args.fixture) as d:
    ref = {k: d[k] for k in d.files}
  state = {k[6:]: v for k, v in ref.items() if k.startswith("state/")}
  c = small_config()
  params = convert.params_from_state_dict(state, c, source=args.fixture)
  rows = []
  res = jax.jit(models.make_restorer(c).apply)({"params": params["restorer"]},
                                               nhwc(ref["in_syn"]))
  rows.append(("restorer residual", rel(res, nhwc(ref["restorer_residual"]))))
  odd = predict.restore_array(c, params["restorer"], nhwc(ref["odd_input"])[0],
                              tile=0)
  rows.append(("odd-size restore 37x45", rel(odd, nhwc(ref["odd_restored"])[0])))
  crit = jax.jit(functools.partial(models.make_critic(c).apply, train=False))(
      {"params": params["critic"]}, nhwc(ref["critic_in"]), ref["critic_gammas"])
  rows.append(("critic eps_hat", rel(crit, nhwc(ref["critic_out"]))))
  emb = layers.gamma_embedding(jax.numpy.asarray(ref["gamma_embedding_in"]), 32)
  rows.append(("gamma embedding", rel(emb, ref["gamma_embedding_out"])))
  rows.append(("betas, 7 schedules (float64)", max(
      rel(diffusion.make_betas(k, 1000), ref[f"betas_{k}"])
      for k in diffusion.SCHEDULES)))
  batch = {"syn_lq": nhwc(ref["in_syn"]), "syn_gt": nhwc(ref["in_gt"]),
           "real_lq": nhwc(ref["in_real"]), "ref_clean": nhwc(ref["in_ref"])}
  alpha = float(ref["alpha_p1"])
  draws = {m: objective.draws_from_reference(
      ref[f"{p}_t"], ref[f"{p}_u"], ref[f"{p}_swap"],
      ref.get(f"{p}_negswap", ref[f"{p}_swap"]), ref["in_noise"])
           for m, p in (("dda", "dda"), ("dda_ex", "ex"))}
  for mode, pre in (("dda", "dda"), ("dda_ex", "ex")):
    fn = objective.make_objective(c, mode)
    _, t = jax.jit(lambda pr, b, d, fn=fn: fn(pr, b, jax.random.key(0), alpha,
                                             draws=d, train=False))(
                                                 params, batch, draws[mode])
    rows.append((f"{mode} diffusion loss", rel(t.diffusion, ref[f"{pre}_loss_noise"])))
    rows.append((f"{mode} pixel loss", rel(t.pixel, ref[f"{pre}_loss_syn"])))
    if mode == "dda":
      rows.append(("dda total loss", rel(t.total, ref["dda_total_loss"])))
  _, t = objective.make_objective(c, "vanilla")(params, batch, jax.random.key(0),
                                                0.0)
  rows.append(("vanilla loss", rel(t.total, ref["vanilla_loss_syn"])))
  fn = objective.make_objective(c, "dda")
  grads = jax.jit(jax.grad(lambda pr: fn(pr, batch, jax.random.key(0), alpha,
                                         draws=draws["dda"], train=False)[0]))(
                                             params)
  ours = convert.state_dict_from_params(grads)
  scale = max(np.abs(ref["grad/" + k]).max() for k in ours)
  errs = [rel(v, ref["grad/" + k]) for k, v in ours.items()
          if np.abs(ref["grad/" + k]).max() >= 1e-6 * scale]
  rows.append((f"gradients, worst of {len(errs)} tensors", max(errs)))
  print("| piece | max relative error |\n| --- | --- |")
  for name, err in rows:
    print(f"| {name} | {err:.2e} |")
  print(json.dumps({"backend": jax.default_backend(),
                    "device": str(jax.devices()[0])}))


if __name__ == "__main__":
  main()
