"""Text conditioning as a component: the caption encoder and every term that reads captions.

The caption embedding conditions the generator and the critic. The text encoder is trained
with the critic by the matching-aware loss: a real face with another sample's caption
counts as fake, which rewards embeddings that tell captions apart by what they say about a
face; the generator reads the embedding without being able to move it.

That signal alone lets the encoder settle on whatever the critic learns first (the
background colour) and forget the rest. The optional contrastive term (XMC-GAN's sentence
term, CLIP's loss) asks each real face to pick out its own caption among the batch's, in
an image embedding the critic reads from its 4x4 features: the encoder must then keep
every attribute that tells faces apart, and the generator, scored the same way on its
fakes, must draw them.

Within a batch the colours alone tell most captions apart, so the contrastive term still
lets the encoder drop the small things (glasses, eye colour, a smile). The optional word
prediction heads say which words a caption contains (bag of words): from the caption
embedding, so that it keeps every word; and from the critic's image embedding, so that the
critic learns to see what each word describes on real faces and the generator, scored by the
same head, must draw it. Scored against the caption's words that head rewards drawing each
word more strongly than real faces do (AC-GAN's bias towards faces easy to classify); the
``twin`` target subtracts a second head trained on the fakes (TAC-GAN), so the term vanishes
where the fakes carry each word as real faces do.

Summed over the words, a rare word (glasses, a beard: a few percent of captions) is mostly a
term for its absence, and the critic and generator hear little of it where a caption holds it;
``word_prediction.balance`` weighs each word's presence by its odds of absence in the captions
seen so far, raised to that power, and scales the weights so that a caption's words weigh as much
in all as before: the balance moves the terms' weight from common words to rare ones without
adding to it (an added weight, up to 99 on the rarest words, turned the faces to blotches).

The critic's image embedding serves the realism score too. ``word_reader`` (a critic trunk of its
own, ``model/text/word_reader=progan``) gives the image word head and its twin their own image
network, trained only by the word terms in the critic step, and leaves the critic's embedding to the
contrastive term. (On CelebA it raised alignment from 0.907 to 0.935 over six seeds, and is part of
experiment=t2f_celeba32; experiments/results/real_faces.md.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2f.data.vocab import SPECIAL_TOKENS, Vocabulary
from t2f.losses import caption_words, contrastive_loss, word_prediction_loss
from t2f.nets.text_encoder import TextEncoder

MISMATCH_MODES = ("shifted", "nearest", "none")
IMAGE_WORD_TARGETS = ("caption", "real", "twin")
REAL_WORD_DECAY = 0.99  # per critic step: the real faces' word rates follow about the last 100 batches
MIN_WORD_RATE = 0.01  # the balance reads rarer (or unseen) words' odds of absence as 100 at most


class TextConditioner(nn.Module):
    """The LSTM caption encoder, the mismatch rule of the matching-aware critic, the
    contrastive and word-prediction terms with their heads, and the encoder's parameter group.

    ``model.text`` in the config; a model without it is unconditional.
    """

    def __init__(
        self,
        vocab_size: int,
        encoder: Mapping[str, Any] | None = None,
        lr_scale: float = 1.0,
        mismatch: str = "shifted",
        mismatch_weight: float = 0.5,
        contrastive: Mapping[str, float] | None = None,
        word_prediction: Mapping[str, float] | None = None,
        word_reader: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not vocab_size:
            raise ValueError("model.text.vocab_size is not set: train() fills it in from a captioned dataset "
                             "(synthetic, celeba, face2text, or folder with captions)")
        if mismatch not in MISMATCH_MODES:
            raise ValueError(f"model.text.mismatch={mismatch!r}: choose one of {', '.join(MISMATCH_MODES)}")
        if not 0 < mismatch_weight < 1:
            raise ValueError(f"model.text.mismatch_weight={mismatch_weight} must be in (0, 1): the fake pair's "
                             "share is 1 minus it (no mismatched pair at all: model.text.mismatch=none)")
        if not lr_scale >= 0:
            raise ValueError(f"model.text.lr_scale={lr_scale} must be >= 0")
        self.encoder = TextEncoder(vocab_size, **dict(encoder or {}))
        self.lr_scale = float(lr_scale)
        self.mismatch = mismatch
        self.mismatch_weight = float(mismatch_weight)
        settings = _settings("contrastive", contrastive, {"weight": 0.0, "temperature": 0.1, "generator": 1.0})
        self.contrastive_weight, self.contrastive_temperature = settings["weight"], settings["temperature"]
        self.contrastive_generator = settings["generator"]
        if not self.contrastive_temperature > 0:
            raise ValueError(f"model.text.contrastive.temperature={self.contrastive_temperature} must be > 0")
        words = dict(word_prediction or {})
        self.image_word_target = str(words.pop("image_target", "caption"))
        if self.image_word_target not in IMAGE_WORD_TARGETS:
            raise ValueError(f"model.text.word_prediction.image_target={self.image_word_target!r}: choose one of "
                             f"{', '.join(IMAGE_WORD_TARGETS)}")
        words = _settings("word_prediction", words, {"text": 0.0, "image": 0.0, "balance": 0.0})
        self.text_words_weight, self.image_words_weight = words["text"], words["image"]
        self.word_balance = words["balance"] if self.text_words_weight > 0 or self.image_words_weight > 0 else 0.0
        dim, vocabulary = self.encoder.output_dim, self.encoder.vocab_size - len(SPECIAL_TOKENS)
        self.vocabulary_words = vocabulary
        self.text_words = nn.Linear(dim, vocabulary) if self.text_words_weight > 0 else None
        self.image_words = nn.Linear(dim, vocabulary) if self.image_words_weight > 0 else None
        if self.word_balance > 0:
            # how many training captions held each word, of how many (saved: a resumed run weighs
            # the words as before)
            self.register_buffer("caption_word_counts", torch.zeros(vocabulary))
            self.register_buffer("captions_counted", torch.zeros(()))
        if self.image_words is not None and self.image_word_target == "real":
            # decayed sums of the head's probability on real faces, and of their counts, per word:
            # row 0 over captions without the word, row 1 over captions with it (saved, so a resumed
            # run goes on with the same targets)
            self.register_buffer("real_word_sums", torch.zeros(2, vocabulary))
            self.register_buffer("real_word_counts", torch.zeros(2, vocabulary))
        self.word_reader = word_reader
        if word_reader is not None:
            if self.image_words is None:
                raise ValueError("model.text.word_reader is the image word head's network: set "
                                 "model.text.word_prediction.image > 0, or model.text.word_reader=null")
            if int(getattr(word_reader, "embed_dim", 0)) != dim:
                raise ValueError(f"model.text.word_reader.embed_dim={getattr(word_reader, 'embed_dim', 0)} must be the "
                                 f"caption embedding's size, {dim} (model.text.encoder.hidden_dim)")
        # TAC-GAN's twin: the same head trained on the generator's faces, whose reading of each word
        # the generator's term subtracts, so drawing a word more strongly than real faces do no
        # longer pays
        self.fake_words = nn.Linear(dim, vocabulary) if self.reads_fake_embedding else None

    @property
    def output_dim(self) -> int:
        """The caption embedding's size, which the generator and critic are built for."""
        return self.encoder.output_dim

    @property
    def reads_image_embedding(self) -> bool:
        """Whether a term reads the critic's image embedding (its ``embed_dim`` must then be set)."""
        return self.contrastive_weight > 0 or (self.image_words is not None and self.word_reader is None)

    @property
    def reads_image_words(self) -> bool:
        """Whether the image word head reads the images (from the critic's embedding or the word reader's)."""
        return self.image_words is not None

    @property
    def reads_fake_embedding(self) -> bool:
        """Whether the critic step also reads the fakes' words (the twin head)."""
        return self.image_words is not None and self.image_word_target == "twin"

    def param_groups(self, critic: list[nn.Parameter]) -> list[dict[str, Any]]:
        """The critic optimizer's groups: the critic with the image-word head (its twin, its word
        reader), and the encoder with the text-word head at ``lr_scale`` of the critic's rate."""
        heads = [head for head in (self.image_words, self.fake_words, self.word_reader) if head is not None]
        critic = list(critic) + [p for head in heads for p in head.parameters()]
        text = list(self.encoder.parameters())
        if self.text_words is not None:
            text += list(self.text_words.parameters())
        return [{"params": critic}, {"params": text, "lr_scale": self.lr_scale}]

    def conditions(self, tokens: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """What a batch's captions give the losses: their embedding, token ids, which pairs of
        samples share a sentence, and (for the word terms) which words each caption holds, built
        once for every term of the step."""
        conditions = {"text_embedding": self.encoder(tokens, lengths), "caption": tokens,
                      "same_caption": (tokens[:, None, :] == tokens[None, :, :]).all(dim=2)}
        if self.text_words is not None or self.image_words is not None:
            conditions["words"] = caption_words(tokens, len(SPECIAL_TOKENS), self.vocabulary_words)
        return conditions

    def embed(self, inputs: Mapping[str, Any]) -> Tensor:
        """The embedding in generator inputs, or computed from their token ids (grids, generate)."""
        embedding = inputs.get("text_embedding")
        if embedding is None:
            embedding = self.encoder(inputs["caption"], inputs["caption_length"])
        return embedding

    def encode_captions(self, captions: list[str], vocab: Vocabulary, device: torch.device | str
                        ) -> dict[str, Tensor]:
        """Token ids and lengths for captions (unknown words map to <unk> with a warning)."""
        padded, lengths = vocab.encode_batch(captions, warn_unknown=True)
        return {"caption": padded.to(device), "caption_length": lengths}

    def mismatched(self, conditions: Mapping[str, Tensor]) -> Tensor | None:
        """Each real face paired with another sample's caption, a pair that counts as fake:
        the next sample's (``shifted``) or the one whose embedding is closest (``nearest``,
        a hard negative: captions that share the colours and differ in smaller things). None
        with ``none``: a plain conditional critic, which only tells real pairs from generated
        ones (a mismatch term also rewards faces that fit their caption better than real ones do)."""
        condition = conditions["text_embedding"]
        if self.mismatch == "none":
            return None
        if self.mismatch == "shifted":
            return condition.roll(1, dims=0)
        unit = F.normalize(condition.detach(), dim=1)
        # itself and repeats of its sentence are not mismatches
        similarity = (unit @ unit.t()).masked_fill(conditions["same_caption"], float("-inf"))
        return condition[similarity.argmax(dim=1)]

    def image_terms(self, image_embedding: Tensor | None, conditions: Mapping[str, Tensor], fakes: bool = False,
                    word_embedding: Tensor | None = None) -> dict[str, Tensor]:
        """The terms read from the images, the same for real faces (critic step) and ``fakes``
        (generator step): the contrastive term on the critic's image embedding and the image's word
        prediction on ``word_embedding`` (``Players.word_embedding``; default: the critic's).
        On fakes the contrastive weight is scaled by ``contrastive.generator``: the critic and the
        encoder learn to read every attribute from real faces at the full weight, while the
        generator's reward for faces easier to recognise than real ones (a caricature) can be
        smaller."""
        terms = {}
        weight = self.contrastive_weight * (self.contrastive_generator if fakes else 1.0)
        if weight > 0:
            terms["contrastive"] = weight * contrastive_loss(
                image_embedding, conditions["text_embedding"], self.contrastive_temperature,
                conditions.get("same_caption"))
        if self.image_words is not None:
            word_embedding = image_embedding if word_embedding is None else word_embedding
            logits = self.image_words(word_embedding)
            present = self.batch_words(conditions)
            if self.image_word_target == "real":
                if fakes:
                    present = self.real_word_targets(logits.detach(), present)
                else:
                    self.track_real_words(logits.detach(), present)
            loss = self.word_loss(logits, present)
            if fakes and self.fake_words is not None:
                loss = loss - self.word_loss(self.fake_words(word_embedding), present)
            terms["image_words"] = self.image_words_weight * loss
        return terms

    def fake_image_terms(self, word_embedding: Tensor, conditions: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The critic step's term on the fakes' word embedding: ``image_target=twin`` trains the
        twin head to read the words of the fakes' captions from them (TAC-GAN). The generator's
        word term is the real head's loss minus the twin's: it vanishes where the fakes carry each
        word as real faces do, so unlike ``caption`` it stops rewarding a caricature."""
        if self.fake_words is None:
            return {}
        logits = self.fake_words(word_embedding)
        present = self.batch_words(conditions)
        return {"image_words_twin": self.image_words_weight * self.word_loss(logits, present)}

    @torch.no_grad()
    def count_caption_words(self, conditions: Mapping[str, Tensor]) -> None:
        """Adds a training batch's captions to the word counts the balance weighs words by (once
        per critic step, before its terms; nothing without ``word_prediction.balance``). Under DDP
        each process counts its own captions."""
        if self.word_balance > 0:
            present = self.batch_words(conditions)
            self.caption_word_counts.add_(present.sum(0))
            self.captions_counted.add_(len(present))

    def word_loss(self, logits: Tensor, present: Tensor) -> Tensor:
        """A word head's loss, each word's presence weighed by ``balance``: the odds that a caption
        lacks the word, ``(1 - rate) / rate`` over the captions counted, raised to ``balance`` and
        scaled so that the counted captions' words have a mean weight of 1."""
        if self.word_balance == 0:
            return word_prediction_loss(logits, present)
        rate = self.caption_word_counts / self.captions_counted.clamp_min(1)
        weight = ((1 - rate) / rate.clamp(MIN_WORD_RATE, 1.0)) ** self.word_balance
        words = rate.sum()  # words per caption; 0 before any caption is counted: weights of 1
        mean = (rate * weight).sum() / words.clamp_min(1e-12)
        weight = torch.where(words > 0, weight / mean.clamp_min(1e-12), torch.ones_like(weight))
        return word_prediction_loss(logits, present, weight)

    @torch.no_grad()
    def track_real_words(self, logits: Tensor, present: Tensor) -> None:
        """Adds a batch of real faces to the decayed rates at which the image head reads each word
        on them, apart for captions with and without the word. (Under DDP each process keeps its
        own rates from its own faces.)"""
        probability, present = logits.float().sigmoid(), present.float()
        masks = torch.stack([1.0 - present, present])  # (2, B, W)
        self.real_word_sums.mul_(REAL_WORD_DECAY).add_((masks * probability).sum(1))
        self.real_word_counts.mul_(REAL_WORD_DECAY).add_(masks.sum(1))

    def real_word_targets(self, logits: Tensor, present: Tensor) -> Tensor:
        """``image_target=real``: the generator's word targets for fakes with word ``logits``. A
        word its caption holds is asked for until the fake shows it as often as real faces whose
        captions hold it, and one it lacks is pushed down only while shown more often than on real
        faces whose captions lack it. Never with certainty (which rewards drawing every mentioned
        word more strongly than real faces do), and a fake beyond the real rate is left where it is
        (a target at the rate itself pulled clear faces back to ambiguous ones: experiments/results/
        real_faces.md). Words not yet seen on real faces in a row keep the caption's 0 or 1."""
        seen = self.real_word_counts > 0
        rates = torch.where(seen, self.real_word_sums / self.real_word_counts.clamp_min(1e-12),
                            torch.arange(2, device=seen.device, dtype=torch.float32)[:, None])
        probability, present = logits.float().sigmoid(), present.bool()
        return torch.where(present, torch.maximum(rates[1], probability), torch.minimum(rates[0], probability))

    def batch_words(self, conditions: Mapping[str, Tensor]) -> Tensor:
        """The 0/1 words of the batch's captions (B, words), in the word heads' columns: the ones
        ``conditions()`` built, or from the token ids of conditions put together elsewhere."""
        words = conditions.get("words")
        if words is None:
            words = caption_words(conditions["caption"], len(SPECIAL_TOKENS), self.vocabulary_words)
        return words

    def caption_terms(self, conditions: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The terms read from the caption embedding alone (the text's word prediction)."""
        if self.text_words is None:
            return {}
        logits = self.text_words(conditions["text_embedding"])
        present = self.batch_words(conditions)
        return {"text_words": self.text_words_weight * self.word_loss(logits, present)}


def _settings(name: str, given: Mapping[str, float] | None, defaults: dict[str, float]) -> dict[str, float]:
    """``model.text.<name>`` with its defaults; unknown keys and negative weights are refused."""
    settings = {**defaults, **dict(given or {})}
    unknown = set(settings) - set(defaults)
    if unknown:
        raise ValueError(f"model.text.{name} has unknown keys {sorted(unknown)}: use {', '.join(defaults)}")
    out = {key: float(value) for key, value in settings.items()}
    for key, value in out.items():
        if key != "temperature" and not value >= 0:
            raise ValueError(f"model.text.{name}.{key}={value} must be >= 0 (0 turns it off)")
    return out
