"""Tool-integrated reasoning studies (kind: tir): multi-turn generation with a Python sandbox,
pass@k scoring that can be redone without re-inference, and GRPO with multi-turn rollouts."""
