"""`TransformersGenerator`: Hugging Face models on torch, and the cache of dequantized GGUF weights.

A GGUF file is dequantized once (~70 s) and the fp32 weights are cached as safetensors so later
starts load in seconds. Slower than llama.cpp here; `rag bench` compares the two backends.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

from ..cpu import physical_cores
from ..errors import GenerationError, ModelNotInstalled

class TransformersGenerator:
    backend = "transformers"

    def __init__(self, target: Path | str, model_id: str | None = None, cache_dir: Path | None = None, threads: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_id = model_id or str(target)
        torch.set_num_threads(threads or physical_cores())
        offline = not (isinstance(target, Path) and target.exists())
        try:
            if isinstance(target, Path) and target.suffix == ".gguf":
                folder = dequantized_cache(target, Path(cache_dir or target.parent))
            else:
                folder = target
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
            self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        except OSError as e:
            hint = " (no model hub here: give a local folder)" if offline else ""
            raise ModelNotInstalled(f"cannot load '{self.model_id}'{hint}: {str(e).splitlines()[0]}") from None
        self.model.eval()
        self._lock = threading.Lock()
        self.stats: dict = {}

    def prompt_ids(self, messages: list[dict], prefix: str = ""):
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefix
        return self.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids

    def stream(self, messages: list[dict], max_tokens: int = 256, prefix: str = "",
               passages: Sequence = ()) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        ids = self.prompt_ids(messages, prefix)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        error: list[BaseException] = []
        result = {}

        def run():
            import torch

            try:
                with torch.inference_mode():
                    out = self.model.generate(ids, attention_mask=ids.new_ones(ids.shape), max_new_tokens=max_tokens,
                                              do_sample=False, streamer=streamer,
                                              pad_token_id=self.tokenizer.eos_token_id)
                eos = self.model.generation_config.eos_token_id
                eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
                new = [t for t in out[0, ids.shape[1]:].tolist() if t not in eos]
                result["n"] = len(new)
            except BaseException as e:  # surfaced to the caller below
                error.append(e)
                streamer.end()

        with self._lock:
            t0 = time.perf_counter()
            t_first = None
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            for piece in streamer:
                if piece:
                    if t_first is None:
                        t_first = time.perf_counter()
                    yield piece
            worker.join()
            t_end = time.perf_counter()
        if error:
            raise GenerationError(f"generation failed: {error[0]}")
        # The first token comes with the prompt's forward pass, so "prefill" here includes one sampled token.
        t_first = t_first or t_end
        self.stats = {"prompt_tokens": int(ids.shape[1]), "cached_tokens": 0, "gen_tokens": result.get("n", 0),
                      "prefill_s": t_first - t0, "gen_s": t_end - t_first}

    def score(self, messages: list[dict], prefix: str, continuations: Sequence[str],
              passages: Sequence = ()) -> list[tuple[float, int]]:
        """One forward pass over the prompt; each continuation runs on its KV cache, then is cropped off."""
        import torch

        ids = self.prompt_ids(messages, prefix)
        n0 = ids.shape[1]
        out = []
        with self._lock, torch.inference_mode():
            t0 = time.perf_counter()
            first = self.model(ids, use_cache=True)
            cache = first.past_key_values
            base_logp = torch.log_softmax(first.logits[0, -1].double(), -1)
            for cont in continuations:
                cids = self.tokenizer(cont, return_tensors="pt", add_special_tokens=False).input_ids
                if cids.shape[1] == 0:
                    out.append((0.0, 0))
                    continue
                total = float(base_logp[cids[0, 0]])
                if cids.shape[1] > 1:
                    logits = self.model(cids[:, :-1], past_key_values=cache, use_cache=True).logits[0]
                    cache.crop(n0 - cache.get_seq_length())  # negative: drop this continuation again
                    logp = torch.log_softmax(logits.double(), -1)
                    total += float(logp.gather(1, cids[0, 1:, None]).sum())
                out.append((total, int(cids.shape[1])))
            self.stats = {"prompt_tokens": int(n0), "cached_tokens": 0, "score_s": time.perf_counter() - t0}
        return out


def dequantized_cache(gguf_file: Path, cache_dir: Path) -> Path:
    """fp32 safetensors copy of a GGUF model: dequantizing costs ~70 s, loading this costs seconds.

    transformers refuses `save_pretrained` on GGUF-loaded models, so config, tokenizer and state dict
    are written separately (safetensors' `save_model` handles the tied embedding/LM-head weights).
    """
    out = Path(cache_dir) / "dequantized" / gguf_file.stem
    done = out / "rag_dequantized.json"
    if done.exists():
        return out
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
        model.config.save_pretrained(str(tmp))
        model.generation_config.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        save_model(model, str(tmp / "model.safetensors"))
        (tmp / "rag_dequantized.json").write_text(json.dumps({"source": gguf_file.name}))
        if out.exists():
            import shutil

            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return out
