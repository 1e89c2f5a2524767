"""Small CPU tests of the distillation recipe: the spike guard, the schedule, the prompt split, the
data mixture's resumable order, the chunked KL, and (given SMOLLM_PT, `train_lckv.py setup`'s file)
that the transformers teacher used for generation gives the standard plan's logits.

    /path/to/venv/bin/python -m unittest train/test_distill.py
"""

from __future__ import annotations

import math
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from distill_guard import Schedule, SpikeGuard  # noqa: E402
from distill_prompts import _eval_prompts, build_prompts  # noqa: E402


class GuardTest(unittest.TestCase):
    def test_injected_spike_is_skipped(self):
        g = SpikeGuard(settle=5)
        verdicts = [g.observe(x) for x in [2.0, 1.9, 1.8, 1.8, 1.7, 1.7, 1.6, 9.0, 1.6]]
        self.assertEqual(verdicts, ["ok"] * 7 + ["skip", "ok"])
        self.assertEqual(g.skipped, 1)
        self.assertLess(g.average, 2.0)  # the spike did not enter the average

    def test_persistent_spike_rewinds_and_cuts_lr(self):
        g = SpikeGuard(settle=3, rewind_after=3)
        for x in [1.0, 1.0, 1.0, 1.0]:
            g.observe(x)
        self.assertEqual([g.observe(x) for x in [5.0, 6.0, 7.0]], ["skip", "skip", "rewind"])
        self.assertEqual((g.rewinds, g.lr_scale, g.in_a_row), (1, 0.5, 0))
        self.assertEqual(g.observe(1.0), "ok")

    def test_non_finite_is_a_spike_even_early(self):
        g = SpikeGuard()
        self.assertEqual(g.observe(float("nan")), "skip")
        self.assertEqual(g.observe(float("inf")), "skip")

    def test_falling_loss_is_never_a_spike(self):
        g = SpikeGuard(settle=2)
        self.assertTrue(all(g.observe(5.0 * 0.97**i) == "ok" for i in range(100)))


class ScheduleTest(unittest.TestCase):
    def test_warmup_then_cosine_to_floor(self):
        s = Schedule(peak=1e-3, warmup=10, total=110)
        self.assertAlmostEqual(s.lr(0), 1e-4)
        self.assertAlmostEqual(s.lr(9), 1e-3)
        self.assertAlmostEqual(s.lr(60), 1e-3 * (0.1 + 0.9 * 0.5))
        self.assertAlmostEqual(s.lr(110), 1e-4)
        self.assertTrue(all(s.lr(i) >= s.lr(i + 1) for i in range(10, 120)))

    def test_fit_to_time_only_shrinks(self):
        s = Schedule(peak=1.0, warmup=10, total=1000)
        self.assertEqual(s.fit_to_time(20, 0.5, 100.0), 220)
        self.assertEqual(s.fit_to_time(100, 0.1, 1000.0), 220)  # more time later does not stretch it
        self.assertTrue(math.isclose(s.lr(220), 0.1))


class PromptTest(unittest.TestCase):
    def test_split_is_disjoint_deterministic_and_large(self):
        train, held = build_prompts()
        self.assertEqual((train, held), build_prompts())
        self.assertFalse(set(train) & set(held))
        self.assertEqual(len(set(train)), len(train))
        self.assertGreater(len(train), 5000)
        self.assertGreater(len(held), 100)
        self.assertTrue(_eval_prompts() <= set(held))


class TorchTest(unittest.TestCase):
    def setUp(self):
        try:
            import torch  # noqa: F401
        except ImportError:
            self.skipTest("no torch")

    def test_mixture_resumes_in_order(self):
        import numpy as np

        from distill_train import Mixture

        gen, prose = np.arange(10_000, dtype=np.uint16), np.arange(20_000, 30_000).astype(np.uint16)
        a = Mixture(gen, prose, 16, 0.3, seed=1)
        for _ in range(50):
            a.next(8)
        b = Mixture(gen, prose, 16, 0.3, seed=1)
        b.load(a.state())
        self.assertTrue(bool((a.next(8) == b.next(8)).all()))
        frac = float((a.next(4000) >= 20_000).float().mean())
        self.assertAlmostEqual(frac, 0.3, delta=0.03)

    def test_chunked_kl_matches_direct(self):
        import torch
        import torch.nn.functional as F

        from distill_train import _chunk_losses

        torch.manual_seed(0)
        head_s, head_t, norm = torch.nn.Linear(8, 50, bias=False), torch.nn.Linear(8, 50, bias=False), torch.nn.Identity()
        hs, ht, tgt = torch.randn(30, 8), torch.randn(30, 8), torch.randint(0, 50, (30,))
        kl, ce = _chunk_losses(hs, ht, tgt, norm, head_s, norm, head_t)
        want = F.kl_div(F.log_softmax(head_s(hs), -1), F.log_softmax(head_t(ht), -1), log_target=True, reduction="sum")
        self.assertAlmostEqual(kl.item(), want.item(), places=4)
        self.assertAlmostEqual(ce.item(), F.cross_entropy(head_s(hs), tgt, reduction="sum").item(), places=4)
        self.assertAlmostEqual(_chunk_losses(ht, ht, tgt, norm, head_t, norm, head_t)[0].item(), 0.0, places=5)

    def test_toy_distillation_lowers_kl(self):
        """A random 4-layer teacher; its lckv-w2 student (m=2, b=1) learns one batch."""
        from types import SimpleNamespace

        import torch

        from distill_train import make_models, make_optimizer, step_grads
        from lckv_batched import BatchedLckv
        from lckv_model import LckvConfig

        cfg = dict(vocab_size=64, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                   head_dim=8, intermediate_size=64, rope_theta=10000.0, rms_norm_eps=1e-5,
                   max_position_embeddings=128, tie_word_embeddings=True)
        torch.manual_seed(0)
        weights = BatchedLckv(LckvConfig(**cfg, layer_types="0_1_2_3", force_nodiag=False)).state_dict()
        for k, v in weights.items():  # sharper distributions than the default initialization
            if k.endswith("proj.weight") or k.endswith("embed_tokens.weight"):
                v.mul_(4.0)
        a = SimpleNamespace(lr=3e-3, weight_decay=0.0, micro=0, chunk=16, ce=0.0)
        device = torch.device("cpu")
        teacher, student = make_models(cfg, weights, "lckv-w2", 2, 1, device)
        opt = make_optimizer(student, a, device)
        batch = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1))
        losses = []
        for _ in range(40):
            losses.append(step_grads(student, teacher, batch, a, device)[0])
            opt.step()
            opt.zero_grad(set_to_none=True)
        self.assertGreater(losses[0], 0.01)
        self.assertLess(losses[-1], 0.5 * losses[0])

    def test_hf_teacher_matches_standard_plan(self):
        path = os.environ.get("SMOLLM_PT")
        if not path:
            self.skipTest("set SMOLLM_PT to train_lckv.py setup's weights file")
        import torch

        from distill import load_weights
        from distill_gen import hf_teacher
        from lckv_batched import from_smollm

        cfg, w = load_weights(path, 2)
        tokens = torch.randint(0, cfg["vocab_size"], (1, 20), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ours = from_smollm(cfg, w, "standard").eval().forward_batch(tokens)
            theirs = hf_teacher(cfg, w, torch.device("cpu"), torch.float32)(tokens).logits
        self.assertLess((ours - theirs).abs().max().item(), 1e-3)


class LckvTest(unittest.TestCase):
    """The 30-layer sandwich-6 plan (untrained) through save_pretrained, `lckv convert` and
    `lckv logits --prefill iterative`, against PyTorch's batched forward. Needs SMOLLM_PT, LCKV
    (the binary) and SMOLLM_GGUF."""

    def test_sandwich6_converts_and_matches(self):
        import subprocess
        import tempfile

        env = {k: os.environ.get(k) for k in ("SMOLLM_PT", "LCKV", "SMOLLM_GGUF")}
        if not all(env.values()):
            self.skipTest("set SMOLLM_PT, LCKV and SMOLLM_GGUF")
        import numpy as np
        import torch

        from distill import load_weights
        from lckv_batched import from_smollm
        from lckv_model import save_pretrained

        cfg, w = load_weights(env["SMOLLM_PT"], None)
        # Two passes test the semantics (zeros first, then the previous pass's K/V) without the
        # rounding growth of nine passes through an untrained plan (as train_lckv.py check).
        model = from_smollm(cfg, w, "sandwich-6", m=1, b=1).eval()
        self.assertEqual(model.plan.producers, [0, 4, 11, 18, 25, 29])
        toks = torch.randint(0, cfg["vocab_size"], (1, 24), generator=torch.Generator().manual_seed(3))
        with tempfile.TemporaryDirectory() as d:
            save_pretrained(model, os.path.join(d, "hf"))
            gg, npy = os.path.join(d, "m.gguf"), os.path.join(d, "l.npy")
            subprocess.run([env["LCKV"], "convert", os.path.join(d, "hf"), "-o", gg, "--type", "f32",
                            "--vocab-from", env["SMOLLM_GGUF"]], check=True, stdout=subprocess.DEVNULL)
            info = subprocess.run([env["LCKV"], "inspect", gg], check=True, capture_output=True, text=True).stdout
            self.assertIn("4608", info.replace(",", ""))
            subprocess.run([env["LCKV"], "logits", "-m", gg, "--kv-type", "f32", "--prefill", "iterative", "--tokens",
                            ",".join(map(str, toks[0].tolist())), "-o", npy], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            theirs = torch.from_numpy(np.load(npy)).reshape(24, -1)
        with torch.no_grad():
            ours = model.forward_batch(toks)[0]
        self.assertLess(((ours - theirs).abs().max() / ours.abs().max()).item(), 1e-3)


if __name__ == "__main__":
    unittest.main()
