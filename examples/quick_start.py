"""Where does each token of a query appear in a document image? (TokenOCR's quick start, with transformers.)

    python examples/quick_start.py CHECKPOINT IMAGE QUERY

CHECKPOINT is an original TokenOCR checkpoint folder (config `internvl_chat`, weights, tokenizer.model; or the R50
release's checkpoint.pth with a tokenizer.model). Prints, for each query token, its best cosine similarity and where
on the image that location lies.
"""

import argparse

import torch

from tokenocr.conversion import load_original


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("image")
    parser.add_argument("query")
    args = parser.parse_args(argv)

    model, processor = load_original(args.checkpoint)
    inputs = processor(images=args.image, text=args.query, return_tensors="pt")
    with torch.no_grad():
        outputs = model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"])
    maps = processor.post_process_similarity(outputs.similarity, inputs["grid_cols_rows"], inputs["num_tiles"],
                                             inputs.get("map_sizes"))[0][0]  # map_sizes: whole images (R50)
    height, width = inputs["image_sizes"][0].tolist()
    tokens = processor.query_tokens(inputs["input_ids"][0])
    print(f"grid {inputs['grid_cols_rows'][0].tolist()} (cols, rows); similarity maps {tuple(maps.shape[1:])}")
    for token, token_map in zip(tokens, maps):
        best = int(token_map.argmax())
        row, col = divmod(best, token_map.shape[1])
        y, x = (row + 0.5) * height / token_map.shape[0], (col + 0.5) * width / token_map.shape[1]
        print(f"{token!r:>12}  best similarity {token_map.max().item():+.4f} at about x={x:.0f}, y={y:.0f}")


if __name__ == "__main__":
    main()
