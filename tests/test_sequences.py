import numpy as np
import torch

from helpers.ids import PAD, mask_id, vocab_size
from helpers.sequences import pad_left


def test_pad_left_keeps_most_recent_items_in_last_column():
    out = pad_left([np.array([1, 2, 3, 4]), np.array([9]), np.array([], dtype=np.int64)], 3)
    assert out.dtype == torch.int64
    assert out.tolist() == [[2, 3, 4], [PAD, PAD, 9], [PAD, PAD, PAD]]


def test_id_convention():
    assert PAD == 0 and mask_id(10) == 11
    assert vocab_size(10) == 11 and vocab_size(10, with_mask=True) == 12
