"""Entity unlearning (TOFU-style): invented and real entities, seven unlearning methods, and the
TOFU metrics that say what was forgotten and what was kept.

`entities` writes the data; `methods` holds the losses (GA, GD, KL, IDK, DPO, NPO, NPO+GD);
`pipeline` runs fine-tune -> unlearn -> evaluate; `evaluation` and `tofu` score a model;
`results` stores the tables; `cli` is `workbench unlearn`.
"""
