"""A plain PyTorch (eager) twin of dlm's decoder and SFT train step, for scripts.bench only.

Same architecture as dlm.models.decoder.Decoder with default arguments (RMSNorm, rotate-half
RoPE, grouped-query attention, SwiGLU, tied embeddings), same loss (dlm.train.losses.
next_token_loss) and same optimiser (global-norm clipping, AdamW with decoupled weight decay
on matrices only, linear warmup + cosine). Written the way a PyTorch user would: nn.Linear,
F.scaled_dot_product_attention, torch.optim.AdamW with its defaults. Nothing imports this
module (nor torch) at import time; scripts.bench imports it lazily, only when torch is
installed (requirements-bench.txt).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlm.models.decoder import DecoderConfig
from dlm.train.optim import OptimConfig


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.scale


def rope_tables(cfg: DecoderConfig, seq_len: int):
    half = cfg.head_dim // 2
    inv_freq = cfg.rope_base ** (-torch.arange(half, dtype=torch.float32) / half)
    ang = torch.arange(seq_len, dtype=torch.float32)[:, None] * inv_freq   # [L, half]
    return ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]     # [1, L, 1, half]


def rope(x, cos, sin):
    """Rotate halves (HF layout), as dlm's rope with rope_interleaved=False."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Block(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        d, H, K = cfg.d_model, cfg.head_dim, cfg.n_kv_heads
        self.cfg = cfg
        self.attn_norm = RMSNorm(d, cfg.norm_eps)
        self.q = nn.Linear(d, cfg.n_heads * H, bias=False)
        self.k = nn.Linear(d, K * H, bias=False)
        self.v = nn.Linear(d, K * H, bias=False)
        self.o = nn.Linear(cfg.n_heads * H, d, bias=False)
        self.mlp_norm = RMSNorm(d, cfg.norm_eps)
        self.gate = nn.Linear(d, cfg.d_ff, bias=False)
        self.up = nn.Linear(d, cfg.d_ff, bias=False)
        self.down = nn.Linear(cfg.d_ff, d, bias=False)

    def forward(self, x, cos, sin):
        cfg = self.cfg
        B, L, _ = x.shape
        h = self.attn_norm(x)
        q = rope(self.q(h).view(B, L, cfg.n_heads, cfg.head_dim), cos, sin).transpose(1, 2)
        k = rope(self.k(h).view(B, L, cfg.n_kv_heads, cfg.head_dim), cos, sin).transpose(1, 2)
        v = self.v(h).view(B, L, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        # query head n reads key/value head n // G, as dlm's [K, G] split of the heads
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o(a.transpose(1, 2).reshape(B, L, cfg.n_heads * cfg.head_dim))
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class TorchDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        if not cfg.tie_embeddings or cfg.rope_interleaved or cfg.remat:
            raise ValueError("the torch reference covers tied embeddings and rotate-half RoPE only")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        out_std = 0.02 / (2 * cfg.n_layers) ** 0.5   # dlm's init: N(0, 0.02), scaled residual outs
        for name, p in self.named_parameters():
            if p.ndim == 2:
                residual_out = name.endswith(("o.weight", "down.weight"))
                nn.init.normal_(p, std=out_std if residual_out else 0.02)

    def forward(self, tokens_BxL):
        cos, sin = rope_tables(self.cfg, tokens_BxL.shape[1])
        x = self.embed(tokens_BxL)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.final_norm(x) @ self.embed.weight.T


def next_token_loss(logits_BxLxV, tokens_BxL, loss_mask_BxL):
    """dlm.train.losses.next_token_loss: masked mean of the shifted cross-entropy."""
    nll = F.cross_entropy(logits_BxLxV[:, :-1].flatten(0, 1), tokens_BxL[:, 1:].flatten(),
                          reduction="none")
    mask = loss_mask_BxL[:, 1:].flatten()
    return (nll * mask).sum() / mask.sum().clamp(min=1.0)


def load_dlm_params(model: TorchDecoder, params) -> None:
    """Copy a dlm parameter pytree (flax Dense kernels are [in, out]) into `model`."""
    def t(x):
        return torch.from_numpy(np.array(x, dtype=np.float32))
    with torch.no_grad():
        model.embed.weight.copy_(t(params["embed"]["embedding"]))
        model.final_norm.scale.copy_(t(params["final_norm"]["scale"]))
        for i, block in enumerate(model.blocks):
            p = params[f"blocks_{i}"]
            block.attn_norm.scale.copy_(t(p["attn_norm"]["scale"]))
            block.mlp_norm.scale.copy_(t(p["mlp_norm"]["scale"]))
            for name in ("q", "k", "v", "o"):
                getattr(block, name).weight.copy_(t(p["attn"][name]["kernel"]).T)
            for name in ("gate", "up", "down"):
                getattr(block, name).weight.copy_(t(p["mlp"][name]["kernel"]).T)


def make_optimizer(model: nn.Module, cfg: OptimConfig):
    """dlm.train.optim.make_optimizer in torch: AdamW (decay on matrices only) on warmup-cosine."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(cfg.b1, cfg.b2), eps=1e-8)
    warmup = min(cfg.warmup_steps, max(cfg.total_steps - 1, 0))
    decay_steps = max(cfg.total_steps, warmup + 1)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        frac = min((step - warmup) / max(decay_steps - warmup, 1), 1.0)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)


def make_train_step(model: TorchDecoder, cfg: OptimConfig):
    """step(tokens, loss_mask) -> (loss, grad_norm): forward, backward, clip, AdamW, schedule."""
    opt, sched = make_optimizer(model, cfg)

    def step(tokens_BxL, loss_mask_BxL):
        loss = next_token_loss(model(tokens_BxL), tokens_BxL, loss_mask_BxL)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                   cfg.clip_norm if cfg.clip_norm > 0 else math.inf)
        opt.step()
        sched.step()
        return loss.detach(), grad_norm
    return step
