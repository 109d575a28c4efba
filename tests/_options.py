"""Misused options of the perturbed-gradient wrappers, shared by the Flax helper tests.

Each entry is ``(name, value)``: a keyword argument and a value that must raise an error
naming it when the step (or gradient function) is built.
"""

BAD_WRAPPER_OPTIONS = [
  ("has_aux", "yes"),
  ("split_batch", 1),
  ("antithetic", None),
  ("per_device_perturbations", 0),
  ("axis_name", 3),
  ("axis_name", ()),
  ("batch_argnums", "0"),
  ("batch_argnums", 1.0),
  ("batch_argnums", (0, True)),
  ("aux_reduction", "sum"),
  ("n_perturbations", 0),
  ("perturbation_batch_size", 3),
]
