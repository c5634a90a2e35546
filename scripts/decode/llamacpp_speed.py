"""llama.cpp (through llama-cpp-python) on the same GGUF and prompts as
`cargo run -p gatt-runtime --example decode_speed`: prefill of a 512-token prompt, then greedy
decode steps at batch 1, with and without flash attention. Prints one JSON line per case.

Usage: python llamacpp_speed.py MODEL.gguf [THREADS] [STEPS]
"""
import json
import sys
import time

from llama_cpp import Llama, __version__


def synthetic_prompt(n):
    # The same token ids as the Rust example's batch-1 prompts.
    return [(i * 31) % 5000 + 100 for i in range(n)]


def run(path, threads, steps, flash):
    llm = Llama(
        model_path=path,
        n_threads=threads,
        n_threads_batch=threads,
        n_ctx=1024,
        n_batch=512,
        n_ubatch=512,
        flash_attn=flash,
        verbose=False,
    )
    out = []
    for plen in (512, 32):
        llm.reset()
        prompt = synthetic_prompt(plen)
        t0 = time.perf_counter()
        llm.eval(prompt)
        prefill = time.perf_counter() - t0
        t1 = time.perf_counter()
        for _ in range(steps):
            llm.eval([500])
        dec = time.perf_counter() - t1
        out.append(
            {
                "tool": f"llama-cpp-python {__version__}",
                "flash_attn": flash,
                "threads": threads,
                "prompt": plen,
                "prefill_tok_s": plen / prefill,
                "decode_tok_s": steps / dec,
                "ms_per_step": 1000 * dec / steps,
            }
        )
    return out


def main():
    path = sys.argv[1]
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    for flash in (False, True):
        for row in run(path, threads, steps, flash):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
