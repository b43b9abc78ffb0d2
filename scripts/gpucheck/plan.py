"""The parts of the check, in run order, and each one's time box (stdlib only: the driver
imports this before anything is installed). The boxes add up to 445 s; with the install
(INSTALL_BUDGET_S) and process start-up the whole check fits TOTAL_BUDGET_S = 480 s, and the
driver cuts the last parts short rather than run past it."""

from __future__ import annotations

TOTAL_BUDGET_S = 480.0
INSTALL_BUDGET_S = 25.0
ENVIRONMENT_BUDGET_S = 30.0
FINAL_RESERVE_S = 4.0  # writing gpu-check.json/.md after the last part
MIN_PART_S = 8.0  # a box smaller than this is not worth starting a Python + torch process for

PART_BUDGETS_S: dict[str, float] = {
    "pytest-gpu": 60,
    "predict-builtins": 45,
    "predict-gpt2": 40,
    "predict-timm": 35,
    "run-exhaustive": 85,
    "oom-recovery": 25,
    "nvml": 20,
    "triton": 50,
    "gpt2-max-batch": 55,
    "triton-fp32": 30,
}

DESCRIPTIONS: dict[str, str] = {
    "pytest-gpu": "every gpu-marked test (pytest -m gpu), each failure with its message",
    "predict-builtins": "built-ins: measured vs predicted peak allocated/reserved, fp32 and "
                        "bf16 autocast, 3 batch sizes, with and without calibration",
    "predict-gpt2": "transformers GPT-2 small (random weights, seq 1024): the same comparison",
    "predict-timm": "timm ViT-B/16 (random weights, 224 px): the same comparison",
    "run-exhaustive": "`batchprof run --memory-limit 8GiB`, then max and max+1 measured in "
                      "fresh processes",
    "oom-recovery": "50 over-budget probes in a row, then memory_allocated() back to its start",
    "nvml": "every NVML field sampled during a training step and a matmul loop",
    "triton": "compiled Triton copy/triad and bf16 matmul vs torch on the same sizes, vs the "
              "datasheet",
    "gpt2-max-batch": "GPT-2 small (124M, seq 1024): predicted max batch vs measured",
    "triton-fp32": "compiled Triton fp32 and tf32 matmul vs torch",
}
