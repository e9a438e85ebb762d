"""Frame sampling pinned to values worked out by hand, not by the function under test (issue 18).

Train mode (pig-method.md §6.2): ``iv = min(int(n / (k - 1)), (n - 1) // 2)``, then ``start ~ U{0..iv}`` drawn
FIRST and ``end ~ U{n-1-iv .. n-1}`` drawn SECOND from the generator (``torch.randint(low, high + 1)``), then
``int(start + i * (end - start) / (k - 1))``. The literal lists below were written from those draws; the test
also repeats the draws with torch alone so that a reader can see where each number comes from.
"""

import numpy as np
import pytest
import torch

from datasets_scripts.synthetic import write_mp4
from modeling_pig.video_io import read_video, sample_frame_indices

# (n, k, seed) -> (iv, start, end, indices), written by hand from the draws described above
TRAIN_CASES = {
    (250, 12, 0): (22, 19, 231, [19, 38, 57, 76, 96, 115, 134, 153, 173, 192, 211, 231]),
    (250, 12, 1): (22, 9, 228, [9, 28, 48, 68, 88, 108, 128, 148, 168, 188, 208, 228]),
    (100, 8, 7): (14, 0, 92, [0, 13, 26, 39, 52, 65, 78, 92]),
    (37, 12, 3): (3, 2, 33, [2, 4, 7, 10, 13, 16, 18, 21, 24, 27, 30, 33]),
    (5, 12, 0): (0, 0, 4, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4]),  # iv = int(5/11) = 0: ends fixed, frames repeat
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_mode_indices_for_a_fixed_seed_are_the_hand_written_ones(case):
    n, k, seed = case
    interval, start, end, expected = TRAIN_CASES[case]
    assert sample_frame_indices(n, k, "train", torch.Generator().manual_seed(seed)) == expected
    # where the numbers come from: two draws, start first, then end, then truncated even spacing
    g = torch.Generator().manual_seed(seed)
    assert int(torch.randint(0, interval + 1, (1,), generator=g)) == start
    assert int(torch.randint(n - 1 - interval, n, (1,), generator=g)) == end
    assert [int(start + i * (end - start) / (k - 1)) for i in range(k)] == expected


def test_train_mode_uses_the_generator_in_order_and_nothing_else():
    # two videos sampled one after the other from one generator: the second uses draws 3 and 4
    g = torch.Generator().manual_seed(0)
    first = sample_frame_indices(250, 12, "train", g)
    second = sample_frame_indices(250, 12, "train", g)
    assert first == TRAIN_CASES[(250, 12, 0)][3]
    h = torch.Generator().manual_seed(0)
    draws = [int(torch.randint(lo, hi, (1,), generator=h)) for lo, hi in ((0, 23), (227, 250), (0, 23), (227, 250))]
    assert second == [int(draws[2] + i * (draws[3] - draws[2]) / 11) for i in range(12)]
    # the global RNG is not touched when a generator is given
    torch.manual_seed(5)
    before = torch.get_rng_state()
    sample_frame_indices(250, 12, "train", torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), before)


def test_one_frame_in_train_mode_is_drawn_from_all_frames():
    # k = 1: one draw ~ U{0..n-1}; seed 0 with 10 frames gives 4 (torch.randint(0, 10) -> 4)
    assert sample_frame_indices(10, 1, "train", torch.Generator().manual_seed(0)) == [4]
    assert int(torch.randint(0, 10, (1,), generator=torch.Generator().manual_seed(0))) == 4


def test_test_mode_indices_are_the_hand_written_ones():
    assert sample_frame_indices(250, 12) == [0, 22, 45, 67, 90, 113, 135, 158, 181, 203, 226, 249]
    assert sample_frame_indices(16, 12) == [0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 15]
    assert sample_frame_indices(7, 3) == [0, 3, 6]


def test_read_video_in_train_mode_decodes_the_hand_written_frames(tmp_path):
    # 100 frames whose red channel is the frame index: the decoded frames say which ones were read
    frames = np.zeros((100, 16, 16, 3), np.uint8)
    frames[..., 0] = 2 * np.arange(100)[:, None, None]  # 0, 2, ..., 198: far apart after lossy coding
    write_mp4(tmp_path / "counter.mp4", frames, fps=25)
    sample = read_video(tmp_path / "counter.mp4", num_frames=8, mode="train", generator=torch.Generator().manual_seed(7))
    expected = TRAIN_CASES[(100, 8, 7)][3]
    assert sample.indices == expected
    red = sample.frames[:, 8, 8, 0].astype(int)
    assert np.abs(red - 2 * np.array(expected)).max() <= 4, red
