"""FPS, k-NN and 3-NN interpolation against brute-force references."""
import pytest
import torch

from mentor3ad.geometry import pointops


def brute_force_fps(points, num_samples, start=0):
    chosen = [start]
    dist = torch.full((points.shape[0],), float("inf"), dtype=torch.float64)
    for _ in range(num_samples - 1):
        dist = torch.minimum(dist, ((points.double() - points[chosen[-1]].double()) ** 2).sum(-1))
        chosen.append(int(torch.argmax(dist)))
    return chosen


def test_fps_matches_brute_force_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(2, 300, 3, generator=g)
    idx = pointops.farthest_point_sampling(points, 40)
    assert idx.shape == (2, 40)
    for b in range(2):
        assert idx[b].tolist() == brute_force_fps(points[b], 40)
    assert torch.equal(idx, pointops.farthest_point_sampling(points, 40))


def test_fps_respects_lengths_of_padded_batch():
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(50, 3, generator=g), torch.rand(80, 3, generator=g)
    padded = torch.zeros(2, 80, 3)
    padded[0, :50] = a
    padded[0, 50:] = 100.0  # far-away padding would be picked first if it were not masked
    padded[1] = b
    idx = pointops.farthest_point_sampling(padded, 10, lengths=torch.tensor([50, 80]))
    assert idx[0].max() < 50
    assert idx[0].tolist() == brute_force_fps(a, 10)
    assert idx[1].tolist() == brute_force_fps(b, 10)


def reference_fps(points, num_samples, lengths):
    """The straightforward float32 formulation (B, N, 3) the optimised FPS must reproduce bit for bit."""
    batch, num_points, _ = points.shape
    valid = torch.arange(num_points)[None, :] < lengths[:, None]
    min_dist = torch.where(valid, torch.full_like(points[..., 0], float("inf")), torch.full_like(points[..., 0], -1.0))
    selected = torch.empty(batch, num_samples, dtype=torch.long)
    current = torch.zeros(batch, dtype=torch.long)
    for i in range(num_samples):
        selected[:, i] = current
        centre = points[torch.arange(batch), current]
        min_dist = torch.minimum(min_dist, ((points - centre[:, None, :]) ** 2).sum(-1))
        current = torch.argmax(min_dist, dim=1)
    return selected


@pytest.mark.parametrize("batch", [1, 2])
def test_fps_is_bit_identical_to_reference_formulation(batch):
    # metre-scale cloud with many near-ties: any change in float rounding would change some index
    g = torch.Generator().manual_seed(5)
    points = (torch.rand(batch, 3000, 3, generator=g) * 0.08).round(decimals=3)
    lengths = torch.tensor([3000, 2100][:batch])
    idx = pointops.farthest_point_sampling(points, 200, lengths=lengths)
    assert torch.equal(idx, reference_fps(points, 200, lengths))
    assert (idx[batch - 1] < int(lengths[-1])).all()
    assert len(set(idx[0].tolist())) == 200  # no point chosen twice


def test_knn_matches_brute_force_with_chunks_and_padding():
    g = torch.Generator().manual_seed(2)
    points = torch.rand(2, 200, 3, generator=g)
    queries = torch.rand(2, 37, 3, generator=g)
    lengths = torch.tensor([150, 200])
    dist, idx = pointops.knn(queries, points, 5, lengths=lengths, chunk_size=8)
    for b in range(2):
        full = torch.cdist(queries[b].double(), points[b, : lengths[b]].double()) ** 2
        ref_d, ref_i = torch.topk(full, 5, largest=False)
        assert torch.allclose(dist[b].double(), ref_d, atol=1e-5)
        assert torch.equal(idx[b], ref_i)
    assert idx[0].max() < 150


def test_group_points_are_centred_neighbourhoods():
    g = torch.Generator().manual_seed(3)
    points = torch.rand(1, 120, 3, generator=g)
    neighbourhoods, centres = pointops.group_points(points, 8, 6)
    assert neighbourhoods.shape == (1, 8, 6, 3) and centres.shape == (1, 8, 3)
    # each centre is its own nearest neighbour
    assert torch.allclose(neighbourhoods[:, :, 0], torch.zeros(1, 8, 3))


def test_three_nn_interpolation_matches_brute_force():
    g = torch.Generator().manual_seed(4)
    centres = torch.rand(1, 20, 3, generator=g)
    features = torch.rand(1, 20, 7, generator=g)
    queries = torch.rand(1, 30, 3, generator=g)
    out = pointops.interpolate_features(queries, centres, features)
    d = torch.cdist(queries[0], centres[0])
    ref_d, ref_i = torch.topk(d, 3, largest=False)
    w = 1.0 / (ref_d + 1e-8)
    w = w / w.sum(1, keepdim=True)
    ref = (features[0][ref_i] * w[..., None]).sum(1)
    assert torch.allclose(out[0], ref, atol=1e-5)
    # a query exactly on a centre takes that centre's feature
    exact = pointops.interpolate_features(centres[:, :1], centres, features)
    assert torch.allclose(exact[0, 0], features[0, 0], atol=1e-4)


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="valid points"):
        pointops.farthest_point_sampling(torch.rand(1, 5, 3), 10)
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        pointops.knn(torch.rand(1, 4, 2), torch.rand(1, 5, 3), 2)
    with pytest.raises(ValueError, match="k="):
        pointops.knn(torch.rand(1, 4, 3), torch.rand(1, 5, 3), 6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    points = torch.rand(2, 500, 3)
    idx_cpu = pointops.farthest_point_sampling(points, 32)
    idx_gpu = pointops.farthest_point_sampling(points.cuda(), 32).cpu()
    assert torch.equal(idx_cpu, idx_gpu)
    _, knn_cpu = pointops.knn(points[:, :32], points, 4)
    _, knn_gpu = pointops.knn(points[:, :32].cuda(), points.cuda(), 4)
    assert torch.equal(knn_cpu, knn_gpu.cpu())
