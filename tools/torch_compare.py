"""tools/torch_compare.py: the default model's recipe trained by PyTorch from
slm's own initial weights, for the validation loss side by side (issue 16).
Never a build or test dependency; run by hand after `make default-model`:

  /usr/bin/python3 tools/torch_compare.py [--steps N] [--threads N] [--out DIR] [--init FILE]

Reads
  build/default-model/init.gguf          slm's initial f32 weights (tools/default_model.lua --init)
  build/default-model/init.gguf.batches  each step's window starts (0-based), as slm drew them
  models/default/record.json (--out DIR)  the recipe (dims, steps, optimizer) and slm's figures
  data/tinyshakespeare.txt               the corpus
and trains the same model (../shared/fixtures/train/trainref.py's llama
forward: RMSNorm, adjacent-pair RoPE, causal attention, SwiGLU, untied head)
with torch.optim.AdamW (no decay on norms and the token embedding, as slm),
clip_grad_norm_ 1.0 and slm's schedule (linear warmup, cosine to min_lr),
on exactly slm's batches, in float32. Then it measures the validation loss
the way the recipe does (the last 10 % of the characters in windows of
ctx + 1 overlapping by one, whole batches only) and prints it beside slm's.
--steps N stops early (a check of the script: the schedule stays the
recipe's). Writes models/default/torch_compare.json.
"""
import json, math, os, sys, time

import numpy as np
import torch
import torch.nn.functional as Fn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.environ.get("SLM_FIXTURES") or os.path.join(ROOT, "..", "shared", "fixtures")
sys.path.insert(0, os.path.join(FIX, "train"))
import trainref as ref  # noqa: E402  (read_gguf, cfg_from_kv, weight_names, loss_fn, decay_split)


def main():
    args = sys.argv[1:]
    stop, threads = None, 1
    out_dir = os.path.join(ROOT, "models", "default")
    init = os.path.join(ROOT, "build", "default-model", "init.gguf")
    while args:
        a = args.pop(0)
        if a == "--steps":
            stop = int(args.pop(0))
        elif a == "--threads":
            threads = int(args.pop(0))
        elif a == "--out":
            out_dir = args.pop(0)
        elif a == "--init":
            init = args.pop(0)
        else:
            sys.exit(__doc__)
    # torch 1 thread (OpenBLAS at its default) is its best setting here (bench/train.lua --compare)
    torch.set_num_threads(threads)
    rec = json.load(open(os.path.join(out_dir, "record.json")))
    R = rec["recipe"]
    kv, W = ref.read_gguf(init)
    cfg = ref.cfg_from_kv(kv, W)
    assert (cfg["E"], cfg["L"], cfg["H"], cfg["F"]) == (R["dim"], R["layers"], R["heads"], R["ff"]), cfg
    names = ref.weight_names(cfg)
    starts = [[int(x) for x in line.split()]
              for line in open(init + ".batches")]
    assert len(starts) == R["steps"], "batches file: %d steps, the recipe %d" % (len(starts), R["steps"])

    T, B = R["ctx"], R["batch"]
    per_char = 1.0
    if R.get("tokenizer", "chars") == "chars":
        text = open(os.path.join(ROOT, R["corpus"].split(" ")[0]), "rb").read().decode("ascii")
        chars = sorted(set(text))
        assert len(chars) == cfg["V"]
        stoi = {c: i for i, c in enumerate(chars)}
        ids = np.array([stoi[c] for c in text], dtype=np.int64)
        lo = int(0.9 * len(ids))          # 0-based start of the validation part
    else:
        # BPE: the token file slm trained on (training text's ids, then the
        # validation text's; a 32-byte header, u16 ids below 65536 tokens)
        ids = np.fromfile(init + ".tok", dtype=np.uint16,
                          offset=32).astype(np.int64)
        assert ids.max() < cfg["V"]
        lo = rec["train_ids"]
        per_char = rec["ids_per_char"]    # tokens per character of the validation windows

    # the recipe's validation windows
    rows = []
    i = lo
    while i + T < len(ids):
        rows.append(ids[i:i + T + 1])
        i += T
    nb = len(rows) // B
    val = [torch.from_numpy(np.stack(rows[k * B:(k + 1) * B])) for k in range(nb)]

    P = {n: torch.tensor(W[n], dtype=torch.float32, requires_grad=True) for n in names}
    dec, nod = ref.decay_split(names)
    opt = torch.optim.AdamW([{"params": [P[n] for n in dec], "weight_decay": R["weight_decay"]},
                             {"params": [P[n] for n in nod], "weight_decay": 0.0}],
                            lr=R["lr"], betas=tuple(R["betas"]), eps=R["eps"], foreach=False)
    params = [P[n] for n in names]

    def lr_at(it):   # slm's Trainer:lr
        lr, warm, total, mn = R["lr"], R["warmup"], R["steps"], R["min_lr"]
        if it < warm:
            return lr * (it + 1) / (warm + 1)
        if it > total:
            return mn
        r = (it - warm) / max(1, total - warm)
        return mn + 0.5 * (1.0 + math.cos(math.pi * r)) * (lr - mn)

    def val_loss():
        with torch.no_grad():
            return per_char * sum(ref.loss_fn(P, b, cfg).item() for b in val) / len(val)

    v0 = val_loss()
    print("step 0: validation (whole text) %.4f" % v0, flush=True)
    n = stop or R["steps"]
    t0 = time.time()
    losses = []
    for k in range(n):
        batch = torch.from_numpy(np.stack([ids[s:s + T + 1] for s in starts[k]]))
        for gr in opt.param_groups:
            gr["lr"] = lr_at(k)
        opt.zero_grad(set_to_none=True)
        loss = ref.loss_fn(P, batch, cfg)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, R["clip"])
        opt.step()
        losses.append(loss.item())
        if (k + 1) % R["eval_every"] == 0 or k + 1 == n:
            print("step %d: train %.4f (mean of the last 50), %.0f s" % (k + 1, np.mean(losses[-50:]), time.time() - t0),
                  flush=True)
    secs = time.time() - t0
    v = val_loss()
    out = {"steps": n, "val_loss_torch": v, "val_loss_torch_step0": v0, "train_seconds": secs,
           "tokens_per_second": n * B * T / secs, "torch": torch.__version__, "torch_threads": threads,
           "val_loss_slm_f32": rec.get("val_loss_f32"), "val_loss_slm_q8_0": rec.get("val_loss_q8_0"),
           "first_losses": losses[:5], "last_loss": losses[-1]}
    slm_f = ("%.4f (f32) / %.4f (Q8_0)" % (rec["val_loss_f32"], rec["val_loss_q8_0"])
             if "val_loss_f32" in rec else "not in the record (--init-only)")
    print("validation loss over the whole validation text, nats/char: PyTorch %.4f (%d steps, %.0f s, %.0f tok/s), "
          "slm %s" % (v, n, secs, out["tokens_per_second"], slm_f))
    if stop is None:
        json.dump(out, open(os.path.join(out_dir, "torch_compare.json"), "w"), indent=2)
        print("wrote " + os.path.join(out_dir, "torch_compare.json"))


if __name__ == "__main__":
    main()
