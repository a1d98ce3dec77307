"""Self-critical sequence training (Rennie et al. 2017) on cached features.

    python -m training.scst --data ../shared/flickr8k --init runs/lite2/best.safetensors --run-dir runs/lite2_scst

Starts from a cross-entropy checkpoint and maximises CIDEr-D directly: for each image,
``--samples`` captions are sampled and REINFORCE pushes up the log-probability of the samples
that beat a baseline. ``--baseline mean`` (the default; Luo 2020, "a better variant of SCST")
uses the mean CIDEr-D of the image's other samples, which needs no greedy decoding and gives
every image zero-mean advantages; ``--baseline greedy`` (Rennie et al.) uses the CIDEr-D of
the image's greedy caption. On Flickr8k ``val`` the mean baseline reached a higher greedy
CIDEr (see the ablation table in docs/training.md). ``--ema-decay`` (e.g. 0.997) keeps an exponential moving
average of the weights (``torch.optim.swa_utils``); validation and ``best.safetensors`` then use the
average, and the log also records the raw weights' ``val_raw_CIDEr``. Validation (greedy BLEU-4/CIDEr
on ``val``), ``best.safetensors``, ``last.pt`` (atomic, ``--resume``), ``log.csv`` and ``curves.png``
work as in ``training.train``. Starting from an SCST checkpoint chains the stages: the new
checkpoint's ``training["scst"]`` lists every stage's settings. ``--mirrored 0.5`` reads each
training image, with that chance, from a second cache of the images mirrored left to right
(``training.extract_features --mirrored``): an augmentation against fitting the training
references (captions are kept as they are; "left" and "right" are rare in Flickr8k).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from captioner.checkpoint import load_checkpoint, save_checkpoint
from captioner.concepts import ConceptTable, caption_words
from captioner.decoding import StepModel, greedy_decode
from captioner.vocab import END, Vocabulary, tokenize
from training.batches import caption_pairs
from training.cider import CiderD
from training.concept_data import cached_slot_words, slotted_caption_pairs
from training.config_cli import config_parser
from training.datasets import load_corpus
from training.encoder_tuning import TunedEncoderDecoder, cache_for, trunk_flags, tuned_split
from training.progress import format_row, restore_progress, save_progress, write_log
from training.validation import validate

__all__ = ["ScstConfig", "advantages", "main", "sample_captions"]

BASELINES = ("greedy", "mean")


@dataclass(frozen=True)
class ScstConfig:
    """Self-critical training settings (flags map 1:1 onto these fields)."""

    data: str = field(metadata={"help": "corpus folder (images/ + captions)"})
    init: str = field(metadata={"help": "cross-entropy checkpoint to start from"})
    run_dir: str = "runs/scst"
    annotations: str | None = None
    features: str = "runs/features"
    epochs: int = 10
    batch_size: int = 50
    samples: int = 5
    baseline: str = field(default="mean", metadata={"help": "mean (of the image's other samples) | greedy"})
    lr: float = 2e-5
    ema_decay: float = field(default=0.0, metadata={"help": "weight-average decay per step, 0 = off (e.g. 0.997)"})
    clip: float = 1.0
    max_length: int = 16
    patience: int = 3
    select_metric: str = "CIDEr"
    seed: int = 0
    threads: int = 0
    resume: bool = False
    max_train_images: int = 0
    mirrored: float = field(
        default=0.0,
        metadata={
            "help": "chance that a training image is read mirrored (cache from training.extract_features --mirrored)"
        },
    )
    sample_dropout: bool = field(
        default=False,
        metadata={"help": "sample the training captions with the model's dropout on (validation stays without)"},
    )
    copy_weight: float = field(
        default=0.0,
        metadata={
            "help": "concept decoders: weight of a term, on the copy tokens' classifier rows only, that makes "
            "the copy token beat the word it stands for where references name the concept (e.g. 1)"
        },
    )
    reward_end: bool = field(
        default=True,
        metadata={"help": "count <end> as a word in the CIDEr-D reward, so captions stop on a complete phrase"},
    )
    tune_encoder_stages: int = field(
        default=0,
        metadata={
            "help": "also train the encoder's last N stages and head (reads the trunk's cache from "
            "training.extract_features --tune-encoder-stages N)"
        },
    )


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


def copy_targets(
    images, slots: torch.Tensor, vocab: Vocabulary, table: ConceptTable
) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Per training image, its reference captions that name one of its concepts, as pairs of
    token ids: with the copy tokens, and with the words they replace (same positions)."""
    base = len(vocab) - 2 * slots.shape[1]
    plain = caption_pairs(images, range(len(images)), vocab)
    targets: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in images]
    for (row, ids), (_, words) in zip(slotted_caption_pairs(images, range(len(images)), vocab, slots, table), plain):
        if bool((ids >= base).any()):
            targets[row].append((ids, words))
    return targets


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


def _stages(training: dict, stage: dict) -> list[dict]:
    """The SCST stages behind a checkpoint: the init checkpoint's (a dict or a list) plus ``stage``."""
    earlier = training.get("scst", [])
    return [*([earlier] if isinstance(earlier, dict) else earlier), stage]


def _some_mirrored(
    features: torch.Tensor, mirrored: torch.Tensor, chance: float, generator: torch.Generator
) -> torch.Tensor:
    """Each row of ``features`` replaced by its mirrored image's row with probability ``chance``."""
    picked = torch.rand(features.shape[0], generator=generator) < chance
    return torch.where(picked.view(-1, *[1] * (features.dim() - 1)), mirrored, features)


def train_scst(config: ScstConfig) -> Path:
    """Run self-critical training; returns the best checkpoint's path."""
    if config.baseline not in BASELINES:
        raise ValueError(f"--baseline must be one of {BASELINES}, not {config.baseline!r}")
    if not 0.0 <= config.ema_decay < 1.0:
        raise ValueError(f"--ema-decay must be in [0, 1), not {config.ema_decay}")
    if not 0.0 <= config.mirrored <= 1.0:
        raise ValueError(f"--mirrored must be a probability in [0, 1], not {config.mirrored}")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    initial = load_checkpoint(config.init)
    model, vocab, spec = initial.model, initial.vocab, initial.encoder
    cache_spec, extract_flags, top = spec, "", None
    if (config.tune_encoder_stages or initial.encoder_tuned_stages) and model.reads_concepts:
        raise ValueError(
            "a concept decoder reads ImageNet probabilities from the encoder's own map, which a tuned "
            "encoder top would change; train it without --tune-encoder-stages"
        )
    if config.tune_encoder_stages or initial.encoder_tuned_stages:
        if not model.reads_map:
            raise ValueError(
                f"--tune-encoder-stages needs a decoder that reads the encoder's map, not {model.name!r} "
                "(train one with training.train --decoder soft_attention)"
            )
        trunk, top = tuned_split(initial, config.tune_encoder_stages)
        top.requires_grad_(True)
        model = TunedEncoderDecoder(model, top)
        cache_spec, extract_flags = trunk.spec, trunk_flags(spec.name, config.tune_encoder_stages)
    corpus = load_corpus(config.data, annotations=config.annotations)
    names = [image.name for image in corpus]
    features_root = Path(config.features)
    cache = cache_for(features_root, cache_spec, names, extract_flags=extract_flags)
    pooled = cache.model_inputs(initial.model.reads_map)
    mirrored_inputs = (
        cache_for(features_root, cache_spec, names, mirrored=True, extract_flags=extract_flags).model_inputs(
            initial.model.reads_map
        )
        if config.mirrored
        else None
    )
    train_images = [image for image in corpus if image.split == "train"]
    if config.max_train_images:
        train_images = train_images[: config.max_train_images]
    val_images = [image for image in corpus if image.split == "val"]
    train_rows = torch.from_numpy(cache.rows([image.name for image in train_images]))
    val_features = pooled[torch.from_numpy(cache.rows([image.name for image in val_images]))]
    references = [
        [tokenize(c) + ([END] if config.reward_end else []) for c in image.captions] for image in train_images
    ]
    table = initial.concepts
    train_slots = cached_slot_words(initial.model, pooled)[train_rows] if table is not None else None
    cider = CiderD(references)

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    average = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
        if config.ema_decay
        else None
    )
    history: list[dict] = []
    start_epoch, best_score, stale = 0, -1.0, 0
    resume_path, best_path = run_dir / "last.pt", run_dir / "best.safetensors"
    if config.resume and resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        start_epoch, best_score, stale, history = restore_progress(state, model, optimizer)
        if average is not None:
            average.load_state_dict(state["average"])
    else:
        baseline = validate(model, val_features, val_images, vocab, max_length=20, table=table)
        history.append(
            {
                "epoch": 0,
                "train_loss": 0.0,
                "sample_cider_d": 0.0,
                "baseline_cider_d": 0.0,
                "seconds": 0.0,
                **{f"val_{k}": v for k, v in baseline.items()},
                **({"val_raw_CIDEr": baseline["CIDEr"]} if average is not None else {}),
            }
        )
        best_score = baseline[config.select_metric]
        print(f"cross-entropy start: {baseline}", flush=True)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))

    ids = {"start_id": vocab.start_id, "end_id": vocab.end_id}
    copy_captions = (
        copy_targets(train_images, train_slots, vocab, table) if table is not None and config.copy_weight else None
    )

    def words_of(token_ids: list[int], image: int) -> list[str]:
        slots = train_slots[image].tolist() if train_slots is not None else None
        return reward_words(token_ids, vocab, slots=slots, table=table, end=config.reward_end)

    for epoch in range(start_epoch, config.epochs):
        if stale >= config.patience:
            break
        started = time.perf_counter()
        order = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(config.seed + epoch))
        total_loss, total_sample, total_baseline, batches = 0.0, 0.0, 0.0, 0
        flips = torch.Generator().manual_seed(config.seed + 7919 * (epoch + 1))  # the same draws on --resume
        for start in tqdm(range(0, len(order), config.batch_size), desc=f"scst {epoch + 1}", leave=False):
            index = order[start : start + config.batch_size]
            features = pooled[train_rows[index]]
            if mirrored_inputs is not None:
                features = _some_mirrored(features, mirrored_inputs[train_rows[index]], config.mirrored, flips)
            model.eval()
            greedy_rewards = None
            if config.baseline == "greedy":
                greedy = greedy_decode(model, features, max_length=config.max_length, top_k=1, **ids)
                greedy_rewards = torch.tensor(
                    [
                        cider.score(words_of(g.token_ids, i), references[i], key=i)
                        for g, i in zip(greedy, index.tolist())
                    ]
                )
            # By default sample from the same (dropout-free) policy that greedy decoding and
            # validation use, so the greedy baseline and the samples come from one model;
            # --sample-dropout samples (and takes the gradient) with the dropout of training on.
            model.train(config.sample_dropout)
            sampled, log_probs = sample_captions(
                model, features, samples=config.samples, max_length=config.max_length, **ids
            )
            owners = index.repeat_interleave(config.samples).tolist()
            sample_rewards = torch.tensor(
                [cider.score(words_of(row, i), references[i], key=i) for row, i in zip(sampled.tolist(), owners)]
            ).view(len(index), config.samples)
            rewards = advantages(sample_rewards, greedy_rewards).flatten()
            # Every sampled token carries its caption's reward; mean over all tokens of the batch
            # (a per-caption mean would weigh the words of long captions less, and so favour them).
            tokens_in_batch = (log_probs != 0).sum().clamp(min=1)
            loss = -(rewards[:, None] * log_probs).sum() / tokens_in_batch
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if copy_captions is not None:
                add_copy_gradient(
                    model,
                    config.copy_weight * copy_loss(model, features, index, copy_captions, flips, unk_id=vocab.unk_id),
                )
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            if average is not None:
                average.update_parameters(model)
            total_loss += loss.item()
            total_sample += sample_rewards.mean().item()
            total_baseline += (sample_rewards if greedy_rewards is None else greedy_rewards).mean().item()
            batches += 1
        selected = model if average is None else average.module
        scores = validate(selected, val_features, val_images, vocab, max_length=20, table=table)
        row = {
            "epoch": epoch + 1,
            "train_loss": total_loss / batches,
            "sample_cider_d": total_sample / batches,
            "baseline_cider_d": total_baseline / batches,
            "seconds": time.perf_counter() - started,
            **{f"val_{k}": v for k, v in scores.items()},
        }
        if average is not None:
            row["val_raw_CIDEr"] = validate(model, val_features, val_images, vocab, max_length=20, table=table)["CIDEr"]
        history.append(row)
        if scores[config.select_metric] > best_score:
            best_score, stale = scores[config.select_metric], 0
            training = {
                **initial.training,
                "scst": _stages(
                    initial.training,
                    {
                        "config": dataclasses.asdict(config),
                        "epoch": epoch + 1,
                        "seconds": sum(h["seconds"] for h in history),
                    },
                ),
            }
            decoder, tuned = selected, {}
            if top is not None:  # the decoder alone, and the encoder top's weights beside it
                decoder = selected.decoder
                tuned = {
                    "encoder_weights": selected.top.encoder_weights(),
                    "encoder_tuned_stages": config.tune_encoder_stages,
                }
            save_checkpoint(
                best_path,
                decoder,
                vocab,
                spec,
                training=training,
                metrics={"val_greedy": scores},
                concepts=table,
                **tuned,
            )
        else:
            stale += 1
        print(format_row(row), flush=True)
        write_log(run_dir, history)
        save_progress(
            resume_path,
            epoch=epoch + 1,
            model=model,
            optimizer=optimizer,
            best_score=best_score,
            stale=stale,
            history=history,
            **({"average": average.state_dict()} if average is not None else {}),
        )
    return best_path


def main(argv: list[str] | None = None) -> None:
    config = ScstConfig(**vars(config_parser(ScstConfig, __doc__).parse_args(argv)))
    print(f"best checkpoint: {train_scst(config)}")


if __name__ == "__main__":
    main()
