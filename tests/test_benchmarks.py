"""The benchmark scripts run end to end on the shipped checkpoint and report what they promise."""

from __future__ import annotations

import json
import time

import pytest

from benchmarks import breakdown, decoder_precision, encoder_chunks, long_clip, run, scst_batch
from benchmarks.timing import Timing, measure_interleaved


@pytest.mark.slow
def test_speed_benchmark_reports_every_row_and_ratio(tmp_path):
    out = tmp_path / "results.json"
    report = run.main(
        [
            *("--threads", "2", "--repeats", "3", "--batch", "4", "--skip-transformers", "--out", str(out)),
            *("--app-requests", "2", "--rss-requests", "0"),  # the app and the no-op floor, alternated
        ]
    )
    assert json.loads(out.read_text()) == report
    rows = report["rows"]
    expected = {
        "encoder forward, batch 1",
        "encoder forward, batch 4",
        "encoder forward, batch 4 in chunks of 4",
        "caption greedy (file -> words)",
        "caption beam 3",
        "caption beam 5",
        "caption greedy, 12-megapixel phone JPEG",
        "caption greedy, 12-megapixel phone JPEG decoded whole",
        "caption_batch 4 greedy",
        "video clip, 16 frames, greedy",
        "reference: ResNet-50 + LSTM greedy",
        "caption greedy, in turn with the ResNet-50 reference",
        "Gradio floor: no-op /caption, same upload",
        "app round trip /caption, app's default decoding",
        "Gradio floor, client with one SSL context",
        "app round trip, client with one SSL context",
        "concept branch (ImageNet head -> concept slots)",  # the shipped decoder reads concepts
        # it requires confident concepts: a caption searched again for one, beside the same unsearched
        "caption greedy, a required concept searched again (coffee.jpg)",
        "caption greedy, concepts not required (coffee.jpg)",
    }
    assert set(rows) == expected
    assert all(r["median_ms"] > 0 and r["p95_ms"] >= r["median_ms"] for r in rows.values())
    assert len(report["ratios"]) == 11 and all(v > 0 for v in report["ratios"].values())
    assert report["ratios"]["concept branch / encoder batch 1"] < 0.5
    assert report["ratios"]["a required concept searched again / greedy alone (coffee.jpg)"] > 1
    assert report["app"]["requests"] == 1 + 2 * (3 + 2)  # the first caption, warm-ups, both clients
    assert report["app"]["peak_rss_mb"] >= report["app"]["rss_end_mb"] > 0
    assert report["transformers"] == "skipped"
    app_rows = {name: row for name, row in rows.items() if "samples_ms" in row}
    assert len(app_rows) == 4  # the app's and the no-op app's round trips keep every timed call
    for row in app_rows.values():
        assert len(row["samples_ms"]) == 2 and row["samples_ms"] == sorted(row["samples_ms"])
        assert row["samples_ms"][0] <= row["median_ms"] <= row["samples_ms"][-1]
    table = run.markdown(report)
    assert all(f"| {name} |" in table for name in expected)
    assert all(f"- {name}: fastest " in table and " of 2 within 25 ms of it." in table for name in app_rows)


@pytest.mark.slow
def test_encoder_chunk_sweep_times_every_chunk_size_and_plots_it(tmp_path):
    out = tmp_path / "chunks.json"
    report = encoder_chunks.main(["--batch", "4", "--chunks", "1", "2", "8", "--repeats", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    assert list(report["chunks"]) == ["1", "2", "4"]  # a chunk larger than the batch is the whole batch
    assert all(r["ms_per_image"] > 0 for r in report["chunks"].values())
    assert all(abs(r["ms_per_image"] - r["median_ms"] / 4) < 0.01 for r in report["chunks"].values())
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "| 2 |" in encoder_chunks.markdown(report)


@pytest.mark.slow
def test_self_critical_batch_benchmark_times_both_ways_for_each_tuned_depth():
    rows = scst_batch.main(
        ["--images", "2", "--samples", "2", "--stages", "1", "2", "--max-length", "4", "--repeats", "1"]
    )
    assert len(rows) == 4
    assert {name.split(",")[0] for name in rows} == {"1 stage(s) tuned", "2 stage(s) tuned"}
    assert all(row["median_ms"] > 0 and row["repeats"] == 1 for row in rows.values())


@pytest.mark.slow
def test_decoder_precision_benchmark_compares_every_decoder_with_fp32(tmp_path, mini_corpus):
    out = tmp_path / "precision.json"
    report = decoder_precision.main(
        ["--data", str(mini_corpus), "--split", "test", "--repeats", "2", "--out", str(out)]
    )
    rows = report["rows"]
    unfused, torchscript = "fp16, unfused (torch.ao dynamic quantisation)", "fp16, fused, TorchScript kernels"
    assert list(rows) == ["fp32", "fp16", "int8", unfused, torchscript]
    assert all(row["images"] == 8 and row["decode_ms_batch1"] > 0 for row in rows.values())
    # the fused fp16 decoder (C++ or TorchScript kernels) and plain fp16 dynamic quantisation keep every fp32 caption
    assert [rows[name]["identical_to_fp32"] for name in ("fp16", unfused, torchscript)] == [8, 8, 8]
    assert report["decoding"]["beam_size"] >= 1
    assert rows["fp16"]["metrics"] == rows["fp32"]["metrics"]
    assert "| fp16 | 8/8 |" in decoder_precision.markdown(report)


def test_interleaved_timing_calls_each_function_once_a_round_in_shuffled_orders():
    calls: list[str] = []
    names = ["a", "b", "c"]
    timings = measure_interleaved({n: lambda n=n: calls.append(n) for n in names}, warmup=1, repeats=30)
    rounds = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 31 and rounds[0] == names  # one warm-up round in order, then 30 timed rounds
    assert all(sorted(r) == names for r in rounds)  # each function once a round
    # no function always runs right after the same one: every ordered pair occurs within a round
    assert {(r[i], r[i + 1]) for r in rounds[1:] for i in range(2)} == {(x, y) for x in names for y in names if x != y}
    assert list(timings) == names
    assert all(t.repeats == 30 and t.p95_ms >= t.median_ms >= 0 for t in timings.values())
    again: list[str] = []
    measure_interleaved({n: lambda n=n: again.append(n) for n in names}, warmup=1, repeats=30)
    assert again == calls  # seeded: the same orders every run


def test_timing_keeps_its_sorted_samples_and_reports_them_when_asked():
    timing = measure_interleaved({"sleep": lambda: time.sleep(0.002)}, warmup=0, repeats=5)["sleep"]
    assert len(timing.samples_ms) == 5 and list(timing.samples_ms) == sorted(timing.samples_ms)
    assert timing.samples_ms[0] >= 2.0 and timing.median_ms == timing.samples_ms[2]
    assert "samples_ms" not in timing.to_dict()
    assert timing.to_dict(samples=True)["samples_ms"] == [round(t, 1) for t in timing.samples_ms]


def test_round_trips_are_counted_within_a_window_of_the_fastest():
    line = run._bunching("app", [57.9, 58.4, 60.0, 109.0, 110.5])
    assert line == "app: fastest 57.9 ms, 3 of 5 within 25 ms of it."


def test_per_call_timing_divides_a_timed_group_of_calls():
    group = Timing(median_ms=50.0, p95_ms=80.0, repeats=7)
    assert group.per_call(5) == Timing(median_ms=10.0, p95_ms=16.0, repeats=35)


@pytest.mark.slow
def test_breakdown_times_each_stage_of_a_caption(tmp_path):
    out = tmp_path / "breakdown.json"
    rows = breakdown.main(["--threads", "2", "--repeats", "3", "--batch", "6", "--clip-frames", "5", "--out", str(out)])
    assert json.loads(out.read_text()) == rows
    assert list(rows) == [
        "preprocess (JPEG file -> input tensor)",
        "encoder, batch 1",
        "decode greedy (features -> words)",
        "decode beam 5",
        "caption greedy, end to end",
        "decode greedy, TorchScript kernels",  # the shipped decoder runs the C++ kernels: compared with these
        "caption greedy, TorchScript kernels",
        "preprocess 6 photos into a batch",  # caption_batch's parts, timed in a group of their own
        "encoder, 6 photos in chunks of 4",
        "decode greedy, 6 photos",
        "caption_batch 6 greedy, end to end",
        "read 5 frames of the clip",  # caption_video's parts, a third group
        "preprocess 5 frames into a batch",
        "encoder, 5 frames in chunks of 4",
        "decode greedy, the frames' mean features",
        "caption_video 5 frames greedy, end to end",
    ]
    assert all(r["p95_ms"] >= r["median_ms"] > 0 for r in rows.values())
    assert [r["repeats"] for r in rows.values()] == [3] * 7 + [5] * 4 + [5] * 5


@pytest.mark.slow
def test_long_clip_benchmark_times_both_reads_of_the_same_frames(tmp_path):
    out = tmp_path / "long_clip.json"
    report = long_clip.main(
        [*("--seconds", "6", "--width", "96", "--height", "64", "--keyframe-seconds", "0.5"), "--repeats", "2"]
        + ["--out", str(out)]
    )
    assert json.loads(out.read_text()) == report
    assert report["same frames"] is True
    assert list(report["rows"]) == ["read 8 frames, seeking (default)", "read 8 frames, every frame decoded"]
    assert all(row["median_ms"] > 0 and row["repeats"] == 2 for row in report["rows"].values())
    assert report["clip"]["size"] == "96x64" and report["clip"]["seconds"] == 6.0
    assert report["every frame decoded / seeking"] > 0


def test_same_captions_reports_the_images_whose_captions_changed(tmp_path, capsys):
    from benchmarks.same_captions import main as same_captions

    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(json.dumps({"a.jpg": ["a dog runs", "a dog runs"], "b.jpg": ["a cat", "a cat sits"]}))
    after.write_text(json.dumps({"a.jpg": ["a dog runs", "a dog runs"], "b.jpg": ["a cat", "a cat"]}))
    assert same_captions(["--compare", str(before), str(before)]) == 0
    assert same_captions(["--compare", str(before), str(after)]) == 1
    assert "1 of 2 images" in capsys.readouterr().out
