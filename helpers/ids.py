"""The ID convention, fixed once for the whole course.

Every item id that reaches a model obeys it:

* ``PAD = 0`` fills histories shorter than the model's window (left padding: the
  most recent item is always the last column);
* real items are ``1 .. n_items``;
* ``mask_id(n_items) = n_items + 1`` is the ``[MASK]`` token of masked models;
* ``IGNORE = -100`` marks label positions that carry no loss (PyTorch's and
  Hugging Face's default ``ignore_index``).

Score matrices have ``n_items + 1`` columns: column ``PAD`` exists so that item
``i`` is column ``i``, and it is never ranked.
"""

PAD = 0
IGNORE = -100


def mask_id(n_items: int) -> int:
    """The ``[MASK]`` token id for a catalogue of ``n_items`` items."""
    return n_items + 1


def vocab_size(n_items: int, with_mask: bool = False) -> int:
    """Rows of an embedding table: PAD, the items, and MASK when asked."""
    return n_items + 2 if with_mask else n_items + 1
