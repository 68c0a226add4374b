"""Markdown table of the run.sh benches: python table.py (from this folder's parent's parent)."""
import glob, json, os
here = os.path.dirname(os.path.abspath(__file__))
print("| run | network | restorer params | critic params | batch × side² | DDA GFLOP/step | DDA step s | compile s | restore 512² s |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for path in sorted(glob.glob(os.path.join(here, "*.json"))):
  r = json.load(open(path))
  nets = r["environment"]["networks"]
  step = next(x for x in r["results"] if x["case"] == "train dda")
  restore = next((x for x in r["results"] if x["case"].startswith("restore")), None)
  name = f"{nets['restorer'][0]} + {nets['critic'][0]}"
  run = os.path.basename(path)[:-len(".json")]
  print(f"| {run} | {name} | {nets['restorer'][1]:,} | {nets['critic'][1]:,} | "
        f"{step['batch']} × {step['size']}² | {step['flops_per_step'] / 1e9:,.0f} | "
        f"{step['step_time_median_s']:.2f} | {step['compile_s']:.0f} | "
        + (f"{restore['step_time_median_s']:.2f} |" if restore else "– |"))
