"""A `TrainerCallback` that runs the CoT-ICL evaluation during training and logs it."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import TrainerCallback

from hf_cot_distill.core.validation import check_int
from hf_cot_distill.data.synthetic.cot_icl_lab import CoTICLConfig
from hf_cot_distill.eval.cot_icl import evaluate_cot_icl


class CoTICLEvalCallback(TrainerCallback):
    """Evaluate greedy CoT-ICL accuracy every ``eval_every_steps`` steps (and at the end).

    Logged through ``trainer.log`` so every logger the trainer reports to receives it, as
    ``cot_icl/answer_accuracy@drop{k}``, ``cot_icl/position{j}_accuracy@drop{k}`` and the
    chance baselines. The latest results are kept in ``self.history``.
    """

    def __init__(
        self,
        trainer,
        config: CoTICLConfig,
        rows: Sequence[dict],
        *,
        eval_every_steps: int = 100,
        drop_ks: Sequence[int] = (0,),
        drop_mode: str = "first_k",
        batch_size: int = 16,
    ):
        check_int("eval_every_steps", eval_every_steps, minimum=1)
        if not rows:
            raise ValueError("CoTICLEvalCallback needs eval rows (the eval split of the dataset).")
        self.trainer = trainer
        self.config = config
        self.rows = list(rows)
        self.eval_every_steps = eval_every_steps
        self.drop_ks = tuple(drop_ks)
        self.drop_mode = drop_mode
        self.batch_size = batch_size
        self.history: list[dict] = []

    def run(self, step: int) -> dict[str, float]:
        model = self.trainer.model
        logs: dict[str, float] = {}
        for k in self.drop_ks:
            res = evaluate_cot_icl(
                model, self.config, self.rows, drop_k=k, drop_mode=self.drop_mode, batch_size=self.batch_size
            )
            tag = f"@drop{k}"
            logs[f"cot_icl/answer_accuracy{tag}"] = res["answer_accuracy"]
            logs[f"cot_icl/chain_accuracy{tag}"] = res["chain_accuracy"]
            for j, acc in enumerate(res["position_accuracy"]):
                logs[f"cot_icl/position{j}_accuracy{tag}"] = acc
            for name in ("uniform", "marginal_majority", "in_context_majority"):
                logs[f"cot_icl/baseline_{name}"] = res[f"baseline_{name}"]
        self.history.append({"step": step, **logs})
        self.trainer.log(logs)
        return logs

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.eval_every_steps == 0:
            # trainer.log() runs the on_log events, which clear control.should_log: keep the
            # step's own training log (decided by DefaultFlowCallback before us) intact.
            should_log = control.should_log
            self.run(state.global_step)
            control.should_log = should_log
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if not self.history or self.history[-1]["step"] != state.global_step:
            self.run(state.global_step)
        return control
