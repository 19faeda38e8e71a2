"""Reinforcement learning: Brax Ant with friction in the environment state (`env`) and PPO (`ppo`)."""
