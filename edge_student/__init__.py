"""The edge tier: a small local student model that completes answers from the teacher's guidance."""
