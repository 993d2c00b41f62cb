"""The TRL side of ``python -m qrw.bench compare``: qrw's GRPO step beside TRL's ``GRPOTrainer``.

Prompts are random token ids; TRL wants text, so token i is the word ``t{i}`` (:func:`word_tokenizer`) and
qrw's ``sample_groups`` reads the same prompts through :class:`IdRewriter`. :func:`time_grpo` lets the two
steps alternate inside TRL's loop (see :mod:`qrw.bench.compare` for what each step includes).
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
import warnings

import torch

from qrw.grpo import group_advantages
from qrw.lm.generate import sample
from qrw.lm.model import Transformer
from qrw.rollout import frozen_reference, groups_batch, rollout_logprobs, sample_groups
from qrw.update import GRPOConfig, update_policy
from qrw.bench.compare_hf import Sizes, autocast_forward, seconds


# ---- GRPO step -------------------------------------------------------------------------------------

def text_length_reward(completions: list[str], **kwargs) -> list[float]:
    """The trivial reward of the GRPO workload: characters in the decoded completion (a TRL reward function)."""
    return [float(len(text)) for text in completions]


def word_tokenizer(vocab_size: int):
    """A ``transformers`` tokenizer whose token i is the word ``t{i}``; ids V-2 and V-1 are ``<pad>`` and ``<eos>``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size - 2)} | {"<pad>": vocab_size - 2, "<eos>": vocab_size - 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", padding_side="left")


class IdRewriter:
    """What ``qrw.rollout.sample_groups`` needs of a ``qrw.rewriter.Rewriter``, for prompts of random ids.

    A query is the text ``"t12 t873 ..."`` of its token ids (what TRL's tokenizer reads); a completion
    decodes to the words of its tokens before EOS (what TRL's ``batch_decode`` gives its reward function).
    """

    def __init__(self, model: Transformer, max_new_tokens: int):
        self.model, self.max_new_tokens = model, max_new_tokens
        self.pad_id, self.eos_id = model.config.vocab_size - 2, model.config.vocab_size - 1

    def prepare(self, queries: list[str]) -> list[str]:
        return list(queries)

    def prompts(self, queries: list[str]) -> list[list[int]]:
        return [[int(word[1:]) for word in query.split()] for query in queries]

    def rollout(self, queries, *, num_samples, temperature, generator):
        return sample(self.model, self.prompts(queries), num_samples=num_samples, max_new_tokens=self.max_new_tokens,
                      temperature=temperature, eos_id=self.eos_id, pad_id=self.pad_id, generator=generator)

    def decode_rollout(self, rollout) -> list[str]:
        return [" ".join(f"t{t}" for t, m in zip(tokens, mask) if m > 0 and t < self.pad_id)
                for tokens, mask in zip(rollout.tokens.tolist(), rollout.mask.tolist())]

    def well_formed(self, rollout) -> list[bool]:
        return [bool(ids) and ids[-1] == self.eos_id
                for ids in ([t for t, m in zip(tokens, mask) if m > 0]
                            for tokens, mask in zip(rollout.tokens.tolist(), rollout.mask.tolist()))]


def grpo_prompts(vocab_size: int, sizes: Sizes, steps: int, seed: int) -> list[str]:
    """``steps * grpo_prompts`` prompts of random ids as text, ``grpo_prompts`` per step."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size - 2, (steps * sizes.grpo_prompts, sizes.grpo_prompt_len), generator=gen)
    return [" ".join(f"t{t}" for t in row) for row in ids.tolist()]


def qrw_grpo_step(model: Transformer, sizes: Sizes, prompts: list[str], device, seed: int):
    """qrw's GRPO step as ``train_grpo.py`` takes it: returns ``step(index)`` (prompts of step ``index``)
    and the two models (policy, frozen reference) whose forwards it runs."""
    P, G = sizes.grpo_prompts, sizes.grpo_group
    cfg = GRPOConfig(queries_per_step=P, group_size=G, max_new_tokens=sizes.grpo_new_tokens, beta=sizes.grpo_beta,
                     dynamic_sampling=False, mu=1, minibatch_size=0, microbatch_size=P * G, loss_type="grpo",
                     lr=1e-5, temperature=1.0)
    policy, reference = model, frozen_reference(model)
    rewriter = IdRewriter(policy, cfg.max_new_tokens)
    optimizer = torch.optim.AdamW(policy.param_groups(cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.99))
    keep = torch.ones(P, dtype=torch.bool)  # no dynamic sampling: every group is updated

    def step(index: int) -> None:
        generator = torch.Generator(device=device).manual_seed(seed + index)
        groups = sample_groups(rewriter, prompts[index * P:(index + 1) * P], G, temperature=cfg.temperature,
                               generator=generator)
        rewards = torch.tensor(text_length_reward(groups.rewrites)).view(P, G)  # (N,) -> (P, G)
        advantages = group_advantages(rewards, scale="group")  # (P, G)
        batch = groups_batch(groups, pad_id=rewriter.pad_id, eos_id=rewriter.eos_id, device=device)
        ref_logp = rollout_logprobs(reference, batch, temperature=cfg.temperature)  # (N, L)
        update_policy(policy, optimizer, batch, advantages, keep, cfg, old_logp=groups.rollout.logprobs.to(device),
                      ref_logp=ref_logp)

    return step, [policy, reference]


def time_grpo(hf_model, model: Transformer, sizes: Sizes, dtype, repeats: int, device,
              seed: int) -> tuple[float, float, str]:
    """Median seconds of a qrw GRPO step and of a TRL ``GRPOTrainer`` step, and the optimizer TRL used.

    TRL's loop owns its steps, so qrw's run inside it: TRL's step-end callback stops TRL's clock, then
    takes and times one qrw step on the same prompts; the two alternate as in :func:`side_by_side`. The
    first step of each is warm-up.
    """
    import transformers
    from datasets import Dataset
    from trl import GRPOConfig as TRLGRPOConfig
    from trl import GRPOTrainer

    prompts = grpo_prompts(hf_model.config.vocab_size, sizes, repeats + 1, seed)
    qrw_step, qrw_models = qrw_grpo_step(model, sizes, prompts, device, seed)

    class Alternate(transformers.TrainerCallback):
        def __init__(self):
            self.trl, self.qrw, self.start = [], [], 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.trl.append(time.perf_counter() - self.start)
            self.qrw.append(seconds(functools.partial(qrw_step, len(self.qrw)), device))

    V = hf_model.config.vocab_size
    threads = torch.get_num_threads()
    timer = Alternate()
    with tempfile.TemporaryDirectory() as workdir, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        hf_model.save_pretrained(f"{workdir}/model")  # TRL builds its reference model from this directory
        args = TRLGRPOConfig(
            output_dir=f"{workdir}/out", per_device_train_batch_size=sizes.grpo_prompts * sizes.grpo_group,
            num_generations=sizes.grpo_group, max_completion_length=sizes.grpo_new_tokens, beta=sizes.grpo_beta,
            loss_type="grpo", scale_rewards="group", temperature=1.0, top_k=0, top_p=1.0, learning_rate=1e-5,
            max_steps=repeats + 1, bf16=False, gradient_checkpointing=False, use_cpu=device.type == "cpu",
            report_to="none", save_strategy="no", logging_steps=10_000, disable_tqdm=True, seed=seed,
            shuffle_dataset=False, dataloader_num_workers=0, model_init_kwargs={"dtype": "float32"})
        trainer = GRPOTrainer(model=f"{workdir}/model", reward_funcs=text_length_reward, args=args,
                              train_dataset=Dataset.from_dict({"prompt": prompts}),
                              processing_class=word_tokenizer(V), callbacks=[timer])
        trainer.remove_callback(transformers.PrinterCallback)  # no log lines in the tables
        torch.set_num_threads(threads)  # in case the trainer's setup changed it
        with autocast_forward([trainer.model, trainer.ref_model] + qrw_models, dtype, device.type):
            trainer.train()
        optimizer = type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer)
        fused = any(group.get("fused") for group in trainer.optimizer.param_groups)
    return (statistics.median(timer.qrw[1:]), statistics.median(timer.trl[1:]),
            f"{optimizer.__name__}{' (fused)' if fused else ''}")
