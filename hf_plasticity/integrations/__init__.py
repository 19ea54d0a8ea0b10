"""Glue to the ecosystem: the Trainer callback and finetune entry point, model cards and the Hub, exports to
plain PEFT/transformers, metrics, and the PEFT hooks. Nothing below this package imports it.
"""
