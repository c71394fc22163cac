"""
Whether the document model gives the same answers on a GPU (float32 and bfloat16) as on the CPU in float32: the
largest difference of the query maps, and whether each query's best box is the same, on the sample page.

    python benchmarks/device_agreement.py --device cuda
"""

import argparse
from pathlib import Path

import numpy as np
import torch


ROOT = Path(__file__).resolve().parents[1]
QUERIES = ["February", "WO-4502", "$3,410.50", "ventilation", "Harbour Street"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "tokenocr-tiny-documents"))
    parser.add_argument("--page", default=str(ROOT / "demo" / "examples" / "document_page.png"))
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)

    from PIL import Image

    import tokenocr  # noqa: F401
    from tokenocr.loading import load_pipeline

    page = Image.open(args.page).convert("RGB")
    reference = load_pipeline(args.model, "cpu", "float32")(page, QUERIES, level="query", return_visuals=False)
    for dtype in ("float32", "bfloat16"):
        found = load_pipeline(args.model, args.device, dtype)(page, QUERIES, level="query", return_visuals=False)
        difference = max(float(np.abs(a["similarity"] - b["similarity"]).max()) for a, b in zip(found, reference))
        same = sum(a["boxes"][:1] == b["boxes"][:1] for a, b in zip(found, reference))
        print(f"{args.device} {dtype}: largest query-map difference from CPU float32 {difference:.2e}; "
              f"best box the same for {same} of {len(QUERIES)} queries")
        for a, b in zip(found, reference):
            print(f"  {a['query']!r}: {a['boxes'][:1]} (score {a['score']:.4f}) vs CPU {b['boxes'][:1]} "
                  f"(score {b['score']:.4f})")


if __name__ == "__main__":
    main()
