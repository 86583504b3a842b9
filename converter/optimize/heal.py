"""Recovery after pruning: a short distillation from the unpruned model on calibration text.

Small models lose much of their quality when blocks or neurons go (SmolLM2-135M: perplexity
18 -> 30 with three blocks removed); a few hundred steps of matching the unpruned model's
next-token distribution (KL on logits, optionally MSE on the final hidden state) win most of it
back. The embedding stays frozen: it is tied to the output layer, shared by both models, and the
largest matrix, so freezing it saves time and keeps token_embd identical.
"""

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from converter.errors import ConverterError

DEFAULT_LR = 2e-4
DEFAULT_SEQ_LEN = 256
DEFAULT_BATCH = 4  # 4 x 256 tokens per step: smoother than one crop, same wall time per token


@dataclass
class HealResult:
    """What the healing run did: losses at the start and the end, and its duration."""

    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)

    @property
    def first_loss(self) -> float:
        return sum(self.losses[:10]) / max(1, len(self.losses[:10]))

    @property
    def last_loss(self) -> float:
        return sum(self.losses[-10:]) / max(1, len(self.losses[-10:]))


def _token_stream(windows: list[torch.Tensor], seq_len: int) -> torch.Tensor:
    stream = torch.cat([w.flatten() for w in windows])
    if stream.numel() < seq_len + 1:
        raise ConverterError(
            f"calibration text has {stream.numel()} tokens; healing needs at least {seq_len + 1}"
        )
    return stream


def _lr_at(step: int, steps: int, lr: float) -> float:
    """Linear warm-up over the first 10% of steps, then cosine decay to a tenth."""
    warm = max(1, steps // 10)
    if step < warm:
        return lr * (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def distill_loss(
    student: nn.Module, teacher: nn.Module, ids: torch.Tensor, hidden_weight: float
) -> torch.Tensor:
    """KL(teacher || student) over next-token distributions, plus optional hidden-state MSE."""
    want_hidden = hidden_weight > 0
    with torch.no_grad():
        t_out = teacher(input_ids=ids, use_cache=False, output_hidden_states=want_hidden)
    s_out = student(input_ids=ids, use_cache=False, output_hidden_states=want_hidden)
    t_logp = torch.log_softmax(t_out.logits.float(), dim=-1)
    s_logp = torch.log_softmax(s_out.logits.float(), dim=-1)
    loss = nn.functional.kl_div(s_logp.flatten(0, 1), t_logp.flatten(0, 1), log_target=True,
                                reduction="batchmean")  # fmt: skip
    if want_hidden:
        t_h, s_h = t_out.hidden_states[-1].float(), s_out.hidden_states[-1].float()
        loss = loss + hidden_weight * (s_h - t_h).pow(2).mean() / t_h.pow(2).mean()
    return loss


def heal(
    student: nn.Module,
    teacher: nn.Module,
    windows: list[torch.Tensor],
    *,
    steps: int,
    lr: float = DEFAULT_LR,
    seq_len: int = DEFAULT_SEQ_LEN,
    hidden_weight: float = 0.0,
    batch_size: int = DEFAULT_BATCH,
    seed: int = 0,
    progress: bool = True,
) -> HealResult:
    """Train `student` in place to match `teacher` on random crops of the calibration text
    (`steps` was checked by converter.options)."""
    start = time.perf_counter()
    result = HealResult(steps=steps, seconds=0.0)
    if steps == 0:
        return result
    device = next(student.parameters()).device
    stream = _token_stream(windows, seq_len)
    generator = torch.Generator().manual_seed(seed)
    student.get_input_embeddings().weight.requires_grad_(False)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    teacher.eval()
    student.train()
    bar = tqdm(range(steps), desc="Healing", unit="step", disable=not progress)
    for step in bar:
        begins = torch.randint(0, stream.numel() - seq_len, (batch_size,), generator=generator)
        ids = torch.stack([stream[b : b + seq_len] for b in begins.tolist()]).to(device)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps, lr)
        loss = distill_loss(student, teacher, ids, hidden_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        result.losses.append(float(loss.detach()))
        bar.set_postfix(kl=f"{result.losses[-1]:.4f}")
    student.eval()
    student.get_input_embeddings().weight.requires_grad_(True)
    result.seconds = time.perf_counter() - start
    return result
