"""The teacher: scoring reviews into soft labels, the engines that run it, fine-tuning one."""
