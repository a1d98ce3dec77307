"""Self-critical sequence training (Rennie et al. 2017): the objective ``training.scst`` runs.

For each training image, ``samples`` captions are sampled and REINFORCE pushes up the
log-probability of those whose CIDEr-D beats a baseline: the mean CIDEr-D of the image's other
samples (``"mean"``; Luo 2020) or the CIDEr-D of its greedy caption (``"greedy"``; Rennie et al.).
A concept decoder may add the copy term (:func:`copy_loss`); ``xe_weight`` adds the
cross-entropy of one reference caption per image (a mixed objective, after Paulus et al. 2018),
which keeps the decoder's grammar where CIDEr-D barely minds it: a caption that stops on "a"
loses a few n-grams' worth of reward, but no reference ever ends that way. A concept decoder
trained with the encoder's top adds :func:`imagenet_drift` (``imagenet_weight``), so the tuned
top keeps giving the ImageNet probabilities its concepts are read from. ``bleu_weight`` adds
that much of the caption's sentence BLEU-4 (nltk, smoothed) to its CIDEr-D reward, a mixed
reward as Liu et al. 2017 mix SPICE with CIDEr (SPIDEr). ``unfinished_penalty`` is taken from the
reward of a sample that stops mid-phrase (on "a", "the", "of", ..., or "a white": what
:func:`training.mentions.unfinished` counts), where CIDEr-D alone barely minds the missing noun.
An exponential moving average of the weights (``ema_decay``) is then what is validated and kept.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from captioner.checkpoint import save_checkpoint
from captioner.concepts import ConceptTable, caption_words
from captioner.decoding import StepModel, greedy_decode
from captioner.encoders import EncoderSpec
from captioner.vocab import END, Vocabulary, tokenize
from training.batches import caption_pairs
from training.cider import CiderD
from training.concept_data import slotted_caption_pairs
from training.cross_entropy import masked_cross_entropy
from training.datasets import CaptionedImage
from training.encoder_tuning import TunedEncoderDecoder
from training.loop import Objective
from training.mentions import stops_mid_phrase
from training.validation import ValidationSet

__all__ = [
    "BASELINES",
    "SelfCritical",
    "add_copy_gradient",
    "advantages",
    "caption_reward",
    "copy_loss",
    "copy_targets",
    "float_average",
    "imagenet_drift",
    "reference_loss",
    "reference_targets",
    "reward_words",
    "sample_captions",
]

BASELINES = ("greedy", "mean")


class SelfCritical(Objective):
    """REINFORCE with CIDEr-D rewards of sampled captions, from a trained checkpoint's weights.

    ``inputs(index, generator)`` gives the model's inputs for the training images ``index`` (it
    may draw augmentations from ``generator``, the epoch's generator that the copy term also
    draws from); ``slots`` (images, K) are a concept decoder's slot words of each training image.
    ``record(epoch, seconds)`` is the checkpoint's training record; a model that tunes the
    encoder's last ``encoder_tuned_stages`` stages (:class:`TunedEncoderDecoder`) is saved as
    its decoder with the encoder top's weights beside it. ``imagenet_targets`` (images, 1000):
    the untuned encoder's ImageNet probabilities of each training image, which
    :func:`imagenet_drift` keeps a tuned concept decoder's top close to (weight ``imagenet_weight``).
    """

    columns = ("train_loss", "sample_cider_d", "baseline_cider_d")
    validates_start = True

    def __init__(
        self,
        model: nn.Module,
        *,
        images: list[CaptionedImage],
        inputs: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
        slots: torch.Tensor | None,
        val: ValidationSet,
        spec: EncoderSpec,
        record: Callable[[int, float], dict],
        encoder_tuned_stages: int = 0,
        batch_size: int,
        samples: int,
        baseline: str,
        lr: float,
        ema_decay: float,
        clip: float,
        max_length: int,
        seed: int,
        sample_dropout: bool,
        copy_weight: float,
        reward_end: bool,
        xe_weight: float = 0.0,
        imagenet_targets: torch.Tensor | None = None,
        imagenet_weight: float = 0.0,
        bleu_weight: float = 0.0,
        unfinished_penalty: float = 0.0,
    ) -> None:
        if imagenet_targets is not None and not isinstance(model, TunedEncoderDecoder):
            raise ValueError("ImageNet targets keep a tuned encoder top's head; this model tunes no encoder top")
        self.model, self.images, self.inputs, self.slots, self.val = model, images, inputs, slots, val
        self.spec, self.record, self.encoder_tuned_stages = spec, record, encoder_tuned_stages
        self.batch_size, self.samples, self.baseline, self.clip = batch_size, samples, baseline, clip
        self.max_length, self.seed, self.sample_dropout, self.reward_end = max_length, seed, sample_dropout, reward_end
        self.batch_count = -(-len(images) // batch_size)
        self.references = [[tokenize(c) + ([END] if reward_end else []) for c in image.captions] for image in images]
        self.cider = CiderD(self.references)
        self.bleu_weight, self.unfinished_penalty = bleu_weight, unfinished_penalty
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.average = None
        if ema_decay:
            self.average = AveragedModel(model, multi_avg_fn=float_average(ema_decay), use_buffers=True)
            self.optimizer.register_step_post_hook(lambda *_: self.average.update_parameters(model))
        copies = val.table is not None and bool(copy_weight)
        # the references with copy tokens, built once for the copy term and the reference term
        slotted = reference_targets(images, slots, val.vocab, val.table) if copies or xe_weight else None
        self.copy_weight, self.copy_captions = copy_weight, None
        if copies:
            plain = reference_targets(images, None, val.vocab, None)
            self.copy_captions = copy_targets(slotted, plain, base=len(val.vocab) - 2 * slots.shape[1])
        self.xe_weight, self.reference_ids = xe_weight, slotted if xe_weight else None
        self.decoder = model.decoder if isinstance(model, TunedEncoderDecoder) else model
        self.imagenet_targets = imagenet_targets if imagenet_weight else None
        self.imagenet_weight = imagenet_weight
        if self.imagenet_targets is not None:
            self.columns = (*self.columns, "imagenet_kl")

    def batches(self, epoch: int) -> list[tuple[torch.Tensor, torch.Generator]]:
        """The epoch's shuffled image batches, each with the epoch's generator (the same draws on resume)."""
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(self.seed + epoch))
        flips = torch.Generator().manual_seed(self.seed + 7919 * (epoch + 1))
        return [(order[start : start + self.batch_size], flips) for start in range(0, len(order), self.batch_size)]

    def backward(self, batch: tuple[torch.Tensor, torch.Generator]) -> dict[str, float]:
        index, flips = batch
        features = self.inputs(index, flips)
        ids = {"start_id": self.val.vocab.start_id, "end_id": self.val.vocab.end_id, "max_length": self.max_length}
        self.model.eval()
        greedy_rewards = None
        if self.baseline == "greedy":
            greedy = greedy_decode(self.model, features, top_k=1, **ids)
            greedy_rewards = torch.tensor([self._reward(g.token_ids, i) for g, i in zip(greedy, index.tolist())])
        # By default sample from the same (dropout-free) policy that greedy decoding and
        # validation use, so the greedy baseline and the samples come from one model;
        # sample_dropout samples (and takes the gradient) with the dropout of training on.
        self.model.train(self.sample_dropout)
        sampled, log_probs = sample_captions(self.model, features, samples=self.samples, **ids)
        owners = index.repeat_interleave(self.samples).tolist()
        sample_rewards = torch.tensor([self._reward(row, i) for row, i in zip(sampled.tolist(), owners)]).view(
            len(index), self.samples
        )
        rewards = advantages(sample_rewards, greedy_rewards).flatten()
        # Every sampled token carries its caption's reward; mean over all tokens of the batch
        # (a per-caption mean would weigh the words of long captions less, and so favour them).
        tokens_in_batch = (log_probs != 0).sum().clamp(min=1)
        loss = -(rewards[:, None] * log_probs).sum() / tokens_in_batch
        loss.backward()
        if self.copy_captions is not None:
            term = copy_loss(self.model, features, index, self.copy_captions, flips, unk_id=self.val.vocab.unk_id)
            add_copy_gradient(self.decoder, self.copy_weight * term)
        if self.reference_ids is not None:
            (self.xe_weight * reference_loss(self.model, features, index, self.reference_ids, flips)).backward()
        drift = {}
        if self.imagenet_targets is not None:
            kl = imagenet_drift(self.model, features, self.imagenet_targets[index])
            (self.imagenet_weight * kl).backward()
            drift = {"imagenet_kl": kl.item()}
        baseline = sample_rewards if greedy_rewards is None else greedy_rewards
        return {
            "loss": loss.item(),
            "sample": sample_rewards.mean().item(),
            "baseline": baseline.mean().item(),
            "batches": 1,
            **drift,
        }

    def _reward(self, token_ids: list[int], image: int) -> float:
        """The reward (:func:`caption_reward`) of a caption of training image ``image``."""
        slots = self.slots[image].tolist() if self.slots is not None else None
        words = reward_words(token_ids, self.val.vocab, slots=slots, table=self.val.table, end=self.reward_end)
        return caption_reward(
            self.cider,
            words,
            self.references[image],
            key=image,
            bleu_weight=self.bleu_weight,
            unfinished_penalty=self.unfinished_penalty,
        )

    def epoch_columns(self, sums: dict[str, float]) -> dict[str, float]:
        drift = {"imagenet_kl": sums["imagenet_kl"] / sums["batches"]} if "imagenet_kl" in self.columns else {}
        return {
            "train_loss": sums["loss"] / sums["batches"],
            "sample_cider_d": sums["sample"] / sums["batches"],
            "baseline_cider_d": sums["baseline"] / sums["batches"],
            **drift,
        }

    def _kept(self) -> nn.Module:
        """The weights validated and saved: the average when there is one."""
        return self.model if self.average is None else self.average.module

    def validate(self) -> tuple[dict[str, float], dict[str, float]]:
        scores = self.val.scores(self._kept())
        if self.average is None:
            return scores, {}
        return scores, {"raw_CIDEr": self.val.scores(self.model)["CIDEr"]}

    def save_best(self, path: Path, scores: dict[str, float], *, epoch: int, seconds: float) -> None:
        decoder, tuned = self._kept(), {}
        if isinstance(decoder, TunedEncoderDecoder):  # the decoder alone, the encoder top's weights beside it
            tuned = {
                "encoder_weights": decoder.top.encoder_weights(),
                "encoder_tuned_stages": self.encoder_tuned_stages,
            }
            decoder = decoder.decoder
        save_checkpoint(
            path,
            decoder,
            self.val.vocab,
            self.spec,
            training=self.record(epoch, seconds),
            metrics={"val_greedy": scores},
            concepts=self.val.table,
            **tuned,
        )

    def resume_state(self) -> dict:
        return {"average": self.average.state_dict()} if self.average is not None else {}

    def resume(self, state: dict, path: Path) -> None:
        if self.average is not None:
            self.average.load_state_dict(state["average"])


def float_average(decay: float) -> Callable:
    """An exponential moving average of the floating-point parameters and buffers, for
    :class:`AveragedModel`; integer buffers (a concept decoder's class-to-word index) are copied:
    averaged in floating point and written back, ``v * decay + v * (1 - decay)`` can land just
    under ``v`` and truncate to ``v - 1``."""
    average = get_ema_multi_avg_fn(decay)

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], count: torch.Tensor) -> None:
        if averaged[0].is_floating_point():  # the groups share one dtype
            average(averaged, current, count)
        else:
            for kept, now in zip(averaged, current):
                kept.copy_(now)

    return update


def sample_captions(
    model: StepModel, features: torch.Tensor, *, start_id: int, end_id: int, max_length: int, samples: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``samples`` captions per image, image by image (image 0's first). Returns token ids
    (B * samples, T) (0 after ``<end>``) and their log-probs (B * samples, T).

    Each image's initial state (the glue, and a fine-tuned encoder top) is computed once and
    repeated for its samples, so those layers run on B images, not B * samples; with dropout
    on, an image's samples share its image-dropout mask."""
    state = model.init_state(features)
    if samples > 1:
        state = model.select_state(state, torch.arange(features.shape[0]).repeat_interleave(samples))
    rows = features.shape[0] * samples
    tokens = torch.full((rows,), start_id, dtype=torch.long)
    alive = torch.ones(rows, dtype=torch.bool)
    ids, log_probs = [], []
    for _ in range(max_length):
        logits, state = model.step(tokens, state)
        log_p = torch.log_softmax(logits, dim=-1)  # (B, V)
        tokens = torch.multinomial(log_p.exp(), 1).squeeze(1)  # (B,)
        chosen = log_p.gather(1, tokens[:, None]).squeeze(1)
        tokens = torch.where(alive, tokens, torch.zeros_like(tokens))
        ids.append(tokens)
        log_probs.append(chosen * alive)
        alive = alive & (tokens != end_id)
        if not alive.any():
            break
    return torch.stack(ids, dim=1), torch.stack(log_probs, dim=1)


def reward_words(
    ids: list[int], vocab: Vocabulary, *, slots: list[int] | None = None, table: ConceptTable | None = None, end: bool
) -> list[str]:
    """A sampled caption's words as CIDEr-D scores them: a concept decoder's copy tokens filled
    with the image's ``slots`` words, and with ``end``, ``<end>`` as a last word when the caption
    finished (Rennie et al. 2017, appendix E): a caption that stops on "a" or "the" then matches
    no reference's last n-grams, so self-critical training stops teaching such endings."""
    if table is not None and slots is not None:
        words = caption_words(ids, vocab.tokens, vocab.end_id, slots, table)
    else:
        words = vocab.decode(ids)
    return [*words, END] if end and vocab.end_id in ids else words


def caption_reward(
    cider: CiderD,
    words: list[str],
    references: list[list[str]],
    *,
    key: int,
    bleu_weight: float = 0.0,
    unfinished_penalty: float = 0.0,
) -> float:
    """CIDEr-D of ``words`` against ``references`` (cached under ``key``), plus ``bleu_weight`` ×
    their sentence BLEU-4 (nltk, smoothing method 1 of Chen and Cherry 2014: no zero for a
    caption without a matching 4-gram), less ``unfinished_penalty`` where the caption's last word
    (``<end>`` aside) leaves a phrase open."""
    reward = cider.score(words, references, key=key)
    if bleu_weight:
        reward += bleu_weight * sentence_bleu(references, words, smoothing_function=SmoothingFunction().method1)
    if unfinished_penalty and stops_mid_phrase([w for w in words if w != END]):
        reward -= unfinished_penalty
    return reward


def advantages(rewards: torch.Tensor, greedy_rewards: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample advantages for rewards of shape (images, samples).

    With ``greedy_rewards`` (images,) the baseline is the greedy caption's reward; without it,
    each sample's baseline is the mean reward of the image's other samples.
    """
    if greedy_rewards is not None:
        return rewards - greedy_rewards[:, None]
    count = rewards.shape[1]
    if count < 2:
        raise ValueError("the mean-of-other-samples baseline needs at least 2 samples per image")
    others = (rewards.sum(dim=1, keepdim=True) - rewards) / (count - 1)
    return rewards - others


def copy_targets(
    slotted: list[list[torch.Tensor]], plain: list[list[torch.Tensor]], *, base: int
) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Per training image, its reference captions that name one of its concepts, as pairs of
    token ids: with the copy tokens (``slotted``, from :func:`reference_targets`), and with the
    words they replace (``plain``, the same captions without slots; same positions). Copy tokens
    are the ids from ``base`` on."""
    return [
        [(ids, words) for ids, words in zip(image_slotted, image_plain) if bool((ids >= base).any())]
        for image_slotted, image_plain in zip(slotted, plain)
    ]


def reference_targets(
    images, slots: torch.Tensor | None, vocab: Vocabulary, table: ConceptTable | None
) -> list[list[torch.Tensor]]:
    """Per training image, its reference captions as token ids, with a concept decoder's copy
    tokens where a caption names one of the image's slot concepts (as cross-entropy trains it)."""
    pairs = (
        caption_pairs(images, range(len(images)), vocab)
        if table is None or slots is None
        else slotted_caption_pairs(images, range(len(images)), vocab, slots, table)
    )
    targets: list[list[torch.Tensor]] = [[] for _ in images]
    for row, ids in pairs:
        targets[row].append(ids)
    return targets


def reference_loss(
    model, features: torch.Tensor, index: torch.Tensor, captions: list[list[torch.Tensor]], generator: torch.Generator
) -> torch.Tensor:
    """Cross-entropy of one reference caption per image (drawn from ``generator``), teacher-forced,
    mean over the batch's words."""
    picks = [captions[i][int(torch.randint(len(captions[i]), (1,), generator=generator))] for i in index.tolist()]
    targets = pad_sequence(picks, batch_first=True, padding_value=0)
    logits = model(features, targets)  # (B, T-1, V)
    return masked_cross_entropy(logits, targets[:, 1:])


def copy_loss(
    model,
    features: torch.Tensor,
    index: torch.Tensor,
    captions: list[list[tuple[torch.Tensor, torch.Tensor]]],
    generator: torch.Generator,
    *,
    unk_id: int,
) -> torch.Tensor:
    """Where one reference caption per image names a concept, the copy token should beat the
    word it stands for: mean softplus(word logit - copy logit) at those positions, teacher-forced
    on the caption with its copy tokens. It moves the copy token past the word the decoder would
    have written, and leaves every other choice to the reward."""
    chosen = [(row, captions[i]) for row, i in enumerate(index.tolist()) if captions[i]]
    if not chosen:
        return features.new_zeros(())
    picks = [c[int(torch.randint(len(c), (1,), generator=generator))] for _, c in chosen]
    slotted = pad_sequence([ids for ids, _ in picks], batch_first=True, padding_value=0)
    words = pad_sequence([w for _, w in picks], batch_first=True, padding_value=0)
    logits = model(features[[row for row, _ in chosen]], slotted)  # (b, T-1, V)
    targets, replaced = slotted[:, 1:], words[:, 1:]
    copies = (targets != replaced) & (replaced != unk_id)  # an unknown word has no logit to beat
    if not bool(copies.any()):
        return features.new_zeros(())
    copy_logit = logits[copies].gather(1, targets[copies][:, None])
    word_logit = logits[copies].gather(1, replaced[copies][:, None])
    return F.softplus(word_logit - copy_logit).mean()


def imagenet_drift(model: TunedEncoderDecoder, maps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """KL(``targets`` ‖ the tuned top's ImageNet probabilities) of the trunk's ``maps``, mean over
    the images: how far tuning moved the head a concept decoder reads its concepts from (kept
    small as in "Learning without Forgetting", Li and Hoiem 2016)."""
    log_probs = torch.log_softmax(model.decoder.class_logits(model.encoder_maps(maps)), dim=-1)
    return F.kl_div(log_probs, targets, reduction="batchmean")


def add_copy_gradient(model, loss: torch.Tensor) -> None:
    """Add the copy term's gradient to the copy tokens' rows of the word classifier only: the
    term decides when a copy token beats the word it stands for and leaves the rest of the
    decoder to the reward (through the whole network, its gradient swamped the reward's)."""
    if not loss.requires_grad:
        return
    rows = slice(model.base_vocab_size, None)
    for parameter, gradient in zip(
        (model.head.weight, model.head.bias), torch.autograd.grad(loss, (model.head.weight, model.head.bias))
    ):
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        parameter.grad[rows] += gradient[rows]
