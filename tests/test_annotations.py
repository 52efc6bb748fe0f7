"""trainer.annotations, .raven, .folders: SongExplorer, Raven, plain CSV, folder-per-class.

Every bad-row case checks the Problem's `file:line` and message, and that the good rows around
it still load. Recordings are short synthetic WAVs written per test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.audio import noise, write_wav
from trainer.annotations import (
    Annotation,
    AnnotationError,
    AnnotationSet,
    Problem,
    detect_format,
    load_any,
    load_csv,
    load_folders,
    load_raven,
    load_songexplorer,
)

SR = 8000
SECONDS = 10.0  # every test recording is 10 s = 80000 samples at 8 kHz


def recording(path: Path, seconds: float = SECONDS, sr: int = SR) -> Path:
    return write_wav(path, noise(seconds, sr), sr)


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def spans(found: AnnotationSet) -> list[tuple[float, float, str]]:
    return [(a.start_seconds, a.end_seconds, a.label) for a in found.annotations]


# --- SongExplorer -----------------------------------------------------------------------------

# Lines 1 and 3 are good; line 2 is replaced by each bad case.
SE_GOOD_1 = "rec.wav,8000,8000,annotated,pulse"  # point event at 1 s
SE_GOOD_3 = "rec.wav,16000,24000,annotated,sine"  # 2-3 s


def songexplorer(tmp_path: Path, middle: str) -> Path:
    recording(tmp_path / "rec.wav")
    return write(tmp_path / "rec.wav-annotated-person1.csv", [SE_GOOD_1, middle, SE_GOOD_3])


def test_songexplorer_good_rows(tmp_path: Path) -> None:
    csv = songexplorer(tmp_path, "rec.wav,40000,44000,annotated,not_pulse")
    found = load_songexplorer(tmp_path)
    assert found.problems == []
    assert spans(found) == [(1.0, 1.0, "pulse"), (5.0, 5.5, "not_pulse"), (2.0, 3.0, "sine")]
    first = found.annotations[0]
    assert first == Annotation(tmp_path / "rec.wav", 1.0, 1.0, "pulse", f"{csv}:1", "annotated")
    assert first.is_point and not found.annotations[1].is_point
    assert found.labels() == ["not_pulse", "pulse", "sine"]
    assert found.counts() == {"not_pulse": 1, "pulse": 1, "sine": 1}
    assert found.recordings() == [tmp_path / "rec.wav"]


@pytest.mark.parametrize(
    ("middle", "message"),
    [
        ("other.wav,100,200,annotated,pulse", "recording {tmp}/other.wav not found"),
        (
            "rec.wav,72000,88000,annotated,sine",
            "interval 9.0-11.0 s ends past the end of the recording (10.0 s)",
        ),
        ("rec.wav,300,200,annotated,sine", "start 300.0 samples is after end 200.0 samples"),
        ("rec.wav,-8,200,annotated,sine", "start -8.0 samples is before the recording"),
        ("rec.wav,1x0,200,annotated,sine", "start_tic '1x0' is not a number"),
        ("rec.wav,100,nan,annotated,sine", "stop_tic 'nan' is not a finite number"),
        (
            "rec.wav,100,200,annotated",
            "expected 5 columns (wav,start_tic,stop_tic,kind,label), found 4",
        ),
        ("rec.wav,100,200,annotated,", "empty label"),
    ],
    ids=[
        "missing-audio",
        "past-end",
        "start-after-end",
        "negative",
        "bad-number",
        "nan",
        "columns",
        "empty-label",
    ],
)
def test_songexplorer_bad_row(tmp_path: Path, middle: str, message: str) -> None:
    csv = songexplorer(tmp_path, middle)
    found = load_songexplorer(tmp_path)
    assert found.problems == [Problem(f"{csv}:2", message.format(tmp=tmp_path))]
    assert spans(found) == [(1.0, 1.0, "pulse"), (2.0, 3.0, "sine")]


def test_songexplorer_unknown_label_when_labels_given(tmp_path: Path) -> None:
    csv = songexplorer(tmp_path, "rec.wav,100,200,annotated,pluse")
    found = load_songexplorer(tmp_path, labels={"pulse", "sine"})
    assert found.problems == [
        Problem(f"{csv}:2", "unknown label 'pluse' (expected one of: pulse, sine)")
    ]
    assert spans(found) == [(1.0, 1.0, "pulse"), (2.0, 3.0, "sine")]
    # Without a label set every label is ordinary.
    assert load_songexplorer(tmp_path).counts() == {"pluse": 1, "pulse": 1, "sine": 1}


def test_songexplorer_end_exactly_at_the_end_is_fine(tmp_path: Path) -> None:
    songexplorer(tmp_path, "rec.wav,72000,80000,annotated,sine")
    found = load_songexplorer(tmp_path)
    assert found.problems == []
    assert spans(found)[1] == (9.0, 10.0, "sine")


def test_songexplorer_kinds_filter(tmp_path: Path) -> None:
    recording(tmp_path / "rec.wav")
    write(
        tmp_path / "rec.wav-annotated-x.csv",
        [
            "rec.wav,8000,8000,annotated,pulse",
            "rec.wav,16000,16000,detected,pulse",
            "rec.wav,24000,32000,predicted,sine",
            "rec.wav,99999999,0,detected,pulse",  # bad, but a kind nobody asked for: not reported
        ],
    )
    default = load_songexplorer(tmp_path)
    assert [(a.start_seconds, a.kind) for a in default.annotations] == [(1.0, "annotated")]
    assert default.problems == []
    chosen = load_songexplorer(tmp_path, kinds={"detected", "predicted"})
    assert [(a.start_seconds, a.kind) for a in chosen.annotations] == [
        (2.0, "detected"),
        (3.0, "predicted"),
    ]
    assert [p.origin for p in chosen.problems] == [f"{tmp_path}/rec.wav-annotated-x.csv:4"]
    everything = load_songexplorer(tmp_path, kinds=None)
    assert len(everything.annotations) == 3
    assert [a.kind for a in everything.filter(kinds={"predicted"}).annotations] == ["predicted"]
    assert len(everything.filter(labels={"pulse"}).annotations) == 2
    assert everything.filter(labels={"pulse"}).problems == everything.problems


def test_songexplorer_recursive_discovery_each_at_its_own_rate(tmp_path: Path) -> None:
    recording(tmp_path / "a" / "one.wav", seconds=4.0, sr=2500)
    recording(tmp_path / "b" / "deep" / "two.wav", seconds=2.0, sr=16000)
    write(tmp_path / "a" / "one.wav-annotated-p1.csv", ["one.wav,2500,5000,annotated,sine"])
    write(tmp_path / "a" / "one.wav-annotated-p2.csv", ["one.wav,7500,7500,annotated,pulse"])
    write(tmp_path / "b" / "deep" / "two.wav-annotated-p1.csv", ["two.wav,8000,8000,annotated,x"])
    write(tmp_path / "b" / "notes.csv", ["not,an,annotation,file,at,all"])  # not picked up
    found = load_songexplorer(tmp_path)
    assert found.problems == []
    assert spans(found) == [(1.0, 2.0, "sine"), (3.0, 3.0, "pulse"), (0.5, 0.5, "x")]
    assert found.recordings() == [tmp_path / "a" / "one.wav", tmp_path / "b" / "deep" / "two.wav"]
    # One file on its own works too.
    single = load_songexplorer(tmp_path / "a" / "one.wav-annotated-p2.csv")
    assert spans(single) == [(3.0, 3.0, "pulse")]


def test_songexplorer_windows_line_ends_and_blank_lines(tmp_path: Path) -> None:
    recording(tmp_path / "rec.wav")
    csv = tmp_path / "rec.wav-annotated-p.csv"
    csv.write_bytes(b"rec.wav,8000,8000,annotated,pulse\r\n\r\nrec.wav,1,0,annotated,pulse\r\n")
    found = load_songexplorer(tmp_path)
    assert spans(found) == [(1.0, 1.0, "pulse")]
    assert [p.origin for p in found.problems] == [f"{csv}:3"]


def test_songexplorer_missing_recording_reported_per_row(tmp_path: Path) -> None:
    csv = write(
        tmp_path / "gone.wav-annotated-p.csv",
        ["gone.wav,1,1,annotated,pulse", "gone.wav,2,2,annotated,pulse"],
    )
    found = load_songexplorer(tmp_path)
    assert found.annotations == []
    assert [str(p) for p in found.problems] == [
        f"{csv}:1: recording {tmp_path}/gone.wav not found",
        f"{csv}:2: recording {tmp_path}/gone.wav not found",
    ]


def test_songexplorer_unreadable_recording(tmp_path: Path) -> None:
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really a wav file")
    csv = write(tmp_path / "bad.wav-annotated-p.csv", ["bad.wav,1,1,annotated,pulse"])
    [problem] = load_songexplorer(tmp_path).problems
    assert problem.origin == f"{csv}:1"
    assert problem.message.startswith(f"recording {tmp_path}/bad.wav cannot be read: ")


def test_songexplorer_without_annotation_files_raises(tmp_path: Path) -> None:
    recording(tmp_path / "rec.wav")
    with pytest.raises(AnnotationError, match=r"no SongExplorer annotations \(\*-annotated-\*"):
        load_songexplorer(tmp_path)
    with pytest.raises(AnnotationError, match="no such file or folder"):
        load_songexplorer(tmp_path / "nowhere")


# --- Raven ------------------------------------------------------------------------------------

RAVEN_HEADER = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tSpecies\tAnnotation"


def raven(tmp_path: Path, rows: list[str], name: str = "rec.Table.1.selections.txt") -> Path:
    recording(tmp_path / "rec.wav")
    return write(tmp_path / name, [RAVEN_HEADER, *rows])


def test_raven_chosen_label_column_and_recording_from_name(tmp_path: Path) -> None:
    table = raven(
        tmp_path,
        [
            "1\tSpectrogram 1\t1\t1.5\t2.25\twren\tsong",
            "1\tWaveform 1\t1\t1.5\t2.25\twren\tsong",  # same selection, other view: dropped
            "2\tSpectrogram 1\t1\t4.0\t4.0\trobin\tcall",
        ],
    )
    by_species = load_raven(table, label_column="Species")
    assert by_species.problems == []
    assert spans(by_species) == [(1.5, 2.25, "wren"), (4.0, 4.0, "robin")]
    assert by_species.recordings() == [tmp_path / "rec.wav"]
    assert by_species.annotations[1].origin == f"{table}:4"
    assert spans(load_raven(table)) == [(1.5, 2.25, "song"), (4.0, 4.0, "call")]


def test_raven_recording_argument(tmp_path: Path) -> None:
    other = recording(tmp_path / "elsewhere" / "take2.flac", seconds=3.0)
    table = raven(tmp_path, ["1\tSpectrogram 1\t1\t1.0\t2.0\twren\tsong"], name="t.txt")
    found = load_raven(table, recording=other)
    assert found.recordings() == [other]
    assert spans(found) == [(1.0, 2.0, "song")]


def test_raven_begin_file_and_file_offset(tmp_path: Path) -> None:
    recording(tmp_path / "a.wav", seconds=5.0)
    recording(tmp_path / "b.wav", seconds=5.0)
    table = write(
        tmp_path / "session.txt",
        [
            "Selection\tBegin Time (s)\tEnd Time (s)\tBegin File\tFile Offset (s)\tAnnotation",
            "1\t1.0\t2.0\ta.wav\t1.0\tsong",
            # In a multi-file table Begin Time counts from the first file; the offset is in b.wav.
            "2\t6.5\t7.0\tb.wav\t1.5\tcall",
            "3\t8.0\t9.0\tc.wav\t3.0\tcall",
        ],
    )
    found = load_raven(table, recording=tmp_path / "ignored.wav")
    assert spans(found) == [(1.0, 2.0, "song"), (1.5, 2.0, "call")]
    assert [a.recording for a in found.annotations] == [tmp_path / "a.wav", tmp_path / "b.wav"]
    assert found.problems == [Problem(f"{table}:4", f"recording {tmp_path}/c.wav not found")]


@pytest.mark.parametrize(
    ("middle", "message"),
    [
        (
            "2\tSpectrogram 1\t1\t9.0\t12.0\twren\tsong",
            "interval 9.0-12.0 s ends past the end of the recording (10.0 s)",
        ),
        ("2\tSpectrogram 1\t1\t3.0\t2.0\twren\tsong", "start 3.0 s is after end 2.0 s"),
        ("2\tSpectrogram 1\t1\t3,5\t4.0\twren\tsong", "Begin Time (s) '3,5' is not a number"),
        ("2\tSpectrogram 1\t1\t3.0\t4.0\twren", "expected 7 tab-separated columns, found 6"),
        ("2\tSpectrogram 1\t1\t3.0\t4.0\twren\t", "empty label"),
    ],
    ids=["past-end", "start-after-end", "bad-number", "columns", "empty-label"],
)
def test_raven_bad_row(tmp_path: Path, middle: str, message: str) -> None:
    table = raven(
        tmp_path,
        [
            "1\tSpectrogram 1\t1\t1.0\t2.0\twren\tsong",
            middle,
            "3\tSpectrogram 1\t1\t5.0\t6.0\twren\tcall",
        ],
    )
    found = load_raven(table)
    assert found.problems == [Problem(f"{table}:3", message)]
    assert spans(found) == [(1.0, 2.0, "song"), (5.0, 6.0, "call")]


def test_raven_unknown_label(tmp_path: Path) -> None:
    table = raven(tmp_path, ["1\tS\t1\t1.0\t2.0\twren\tsong", "2\tS\t1\t3.0\t4.0\twren\tsnog"])
    found = load_raven(table, labels={"song"})
    assert found.problems == [Problem(f"{table}:3", "unknown label 'snog' (expected one of: song)")]
    assert spans(found) == [(1.0, 2.0, "song")]


def test_raven_without_a_recording_is_one_problem(tmp_path: Path) -> None:
    table = write(
        tmp_path / "lost.Table.1.selections.txt", [RAVEN_HEADER, "1\tS\t1\t1.0\t2.0\twren\tsong"]
    )
    found = load_raven(table)
    assert found.annotations == []
    assert found.problems == [
        Problem(
            str(table),
            "recording not found: no 'Begin File' column, none given, and no lost.wav "
            "(or .flac, ...) beside the table",
        )
    ]


def test_raven_label_column_found_by_its_usual_names(tmp_path: Path) -> None:
    """A table from another tool keeps its label in `Species` and has no `Annotation`."""
    recording(tmp_path / "rec.wav")
    header = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tSpecies"
    table = write(tmp_path / "rec.Table.1.selections.txt", [header, "1\tS\t1\t1.0\t2.0\twren"])
    assert spans(load_raven(table)) == [(1.0, 2.0, "wren")]
    bare = write(
        tmp_path / "bare.Table.1.selections.txt",
        ["Selection\tBegin Time (s)\tEnd Time (s)\tWho", "1\t1.0\t2.0\twren"],
    )
    with pytest.raises(AnnotationError, match=r"bare.Table.1.selections.txt:1: no label column"):
        load_raven(bare, recording=tmp_path / "rec.wav")
    with pytest.raises(AnnotationError, match=r"name it with --label-column$"):
        load_raven(bare, recording=tmp_path / "rec.wav")
    assert spans(load_raven(bare, label_column="Who", recording=tmp_path / "rec.wav")) == [
        (1.0, 2.0, "wren")
    ]


def test_raven_missing_label_column_raises(tmp_path: Path) -> None:
    table = raven(tmp_path, ["1\tS\t1\t1.0\t2.0\twren\tsong"])
    with pytest.raises(AnnotationError, match=r"selections.txt:1: no column 'Call type' \(col"):
        load_raven(table, label_column="Call type")


# --- plain CSV --------------------------------------------------------------------------------


def plain(tmp_path: Path, middle: str) -> Path:
    recording(tmp_path / "clips" / "rec.wav")
    return write(
        tmp_path / "labels.csv",
        [
            "file,start_seconds,end_seconds,label",
            "clips/rec.wav,0.5,1.5,knock",
            middle,
            "clips/rec.wav,7.25,7.25,click",
        ],
    )


def test_csv_good_rows(tmp_path: Path) -> None:
    table = plain(tmp_path, "clips/rec.wav,2,10,hum")
    found = load_csv(table)
    assert found.problems == []
    assert spans(found) == [(0.5, 1.5, "knock"), (2.0, 10.0, "hum"), (7.25, 7.25, "click")]
    assert found.annotations[1].origin == f"{table}:3"
    assert found.recordings() == [tmp_path / "clips" / "rec.wav"]


def test_csv_columns_in_any_order_with_extras(tmp_path: Path) -> None:
    recording(tmp_path / "rec.wav")
    table = write(
        tmp_path / "t.csv", ["label,notes,end_seconds,file,start_seconds", "a,x,2,rec.wav,1"]
    )
    assert spans(load_csv(table)) == [(1.0, 2.0, "a")]


@pytest.mark.parametrize(
    ("middle", "message"),
    [
        ("clips/nope.wav,1,2,hum", "recording {tmp}/clips/nope.wav not found"),
        (
            "clips/rec.wav,9.5,10.5,hum",
            "interval 9.5-10.5 s ends past the end of the recording (10.0 s)",
        ),
        ("clips/rec.wav,4,3,hum", "start 4.0 s is after end 3.0 s"),
        ("clips/rec.wav,1,two,hum", "end_seconds 'two' is not a number"),
        ("clips/rec.wav,1,2", "expected 4 columns, found 3"),
        ("clips/rec.wav,1,2,hum,extra", "expected 4 columns, found 5"),
    ],
    ids=["missing-audio", "past-end", "start-after-end", "bad-number", "too-few", "too-many"],
)
def test_csv_bad_row(tmp_path: Path, middle: str, message: str) -> None:
    table = plain(tmp_path, middle)
    found = load_csv(table)
    assert found.problems == [Problem(f"{table}:3", message.format(tmp=tmp_path))]
    assert spans(found) == [(0.5, 1.5, "knock"), (7.25, 7.25, "click")]


def test_csv_unknown_label(tmp_path: Path) -> None:
    table = plain(tmp_path, "clips/rec.wav,2,3,hmm")
    found = load_csv(table, labels={"knock", "click", "hum"})
    assert found.problems == [
        Problem(f"{table}:3", "unknown label 'hmm' (expected one of: click, hum, knock)")
    ]
    assert spans(found) == [(0.5, 1.5, "knock"), (7.25, 7.25, "click")]


def test_csv_bad_header_and_unreadable_file_raise(tmp_path: Path) -> None:
    table = write(tmp_path / "t.csv", ["path,begin,end,label", "rec.wav,1,2,a"])
    with pytest.raises(AnnotationError, match=r"t.csv:1: header must name file,start_seconds,"):
        load_csv(table)
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(AnnotationError, match=r"folder.csv: cannot read: Is a directory"):
        load_csv(tmp_path / "folder.csv")


# --- folder per class -------------------------------------------------------------------------


def test_folders_one_annotation_per_clip(tmp_path: Path) -> None:
    recording(tmp_path / "normal" / "n1.wav", seconds=2.0)
    recording(tmp_path / "normal" / "day2" / "n2.flac", seconds=1.5, sr=16000)
    recording(tmp_path / "abnormal" / "a1.wav", seconds=0.5)
    (tmp_path / "normal" / "readme.txt").write_text("not audio")
    recording(tmp_path / ".cache" / "skip.wav")
    found = load_folders(tmp_path)
    assert found.problems == []
    assert spans(found) == [(0.0, 0.5, "abnormal"), (0.0, 1.5, "normal"), (0.0, 2.0, "normal")]
    assert found.counts() == {"abnormal": 1, "normal": 2}
    clip = tmp_path / "abnormal" / "a1.wav"
    assert found.annotations[0] == Annotation(clip, 0.0, 0.5, "abnormal", str(clip))


def test_folders_problems(tmp_path: Path) -> None:
    recording(tmp_path / "normal" / "n1.wav", seconds=2.0)
    stray = recording(tmp_path / "stray.wav")
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "normal" / "broken.wav"
    broken.write_bytes(b"not audio")
    found = load_folders(tmp_path, labels={"normal", "empty"})
    assert spans(found) == [(0.0, 2.0, "normal")]
    assert [p.origin for p in found.problems] == [str(stray), str(tmp_path / "empty"), str(broken)]
    assert found.problems[0].message == "audio file outside a class folder, ignored"
    assert found.problems[1].message == "class folder has no audio files"
    assert found.problems[2].message.startswith(f"recording {broken} cannot be read: ")


def test_folders_unknown_label_and_no_classes(tmp_path: Path) -> None:
    recording(tmp_path / "normal" / "n1.wav", seconds=2.0)
    clip = recording(tmp_path / "abnromal" / "a1.wav", seconds=1.0)
    found = load_folders(tmp_path, labels={"normal", "abnormal"})
    assert found.problems == [
        Problem(str(clip), "unknown label 'abnromal' (expected one of: abnormal, normal)")
    ]
    assert spans(found) == [(0.0, 2.0, "normal")]
    with pytest.raises(AnnotationError, match="no class folders"):
        load_folders(tmp_path / "normal")


# --- load_any ---------------------------------------------------------------------------------


def test_load_any_detects_each_format(tmp_path: Path) -> None:
    se = tmp_path / "se"
    songexplorer(se, "rec.wav,40000,44000,detected,x")
    assert (
        detect_format(se) == detect_format(se / "rec.wav-annotated-person1.csv") == "songexplorer"
    )
    assert spans(load_any(se)) == [(1.0, 1.0, "pulse"), (2.0, 3.0, "sine")]
    assert len(load_any(se, kinds=None).annotations) == 3

    rv = tmp_path / "rv"
    table = raven(rv, ["1\tS\t1\t1.0\t2.0\twren\tsong"])
    renamed = write(rv / "export.txt", table.read_text().splitlines())  # told by its header
    assert detect_format(table) == detect_format(renamed) == detect_format(rv) == "raven"
    assert spans(load_any(table, label_column="Species")) == [(1.0, 2.0, "wren")]
    assert spans(load_any(renamed, recording=rv / "rec.wav")) == [(1.0, 2.0, "song")]
    assert spans(load_any(rv)) == [(1.0, 2.0, "song")]  # every table under the folder

    pc = tmp_path / "pc"
    table = plain(pc, "clips/rec.wav,2,3,hum")
    assert detect_format(table) == "csv"
    assert load_any(table).counts() == {"click": 1, "hum": 1, "knock": 1}

    fo = tmp_path / "fo"
    recording(fo / "normal" / "n.wav", seconds=1.0)
    assert detect_format(fo) == "folders"
    assert spans(load_any(fo)) == [(0.0, 1.0, "normal")]


def test_load_any_errors(tmp_path: Path) -> None:
    unknown = write(tmp_path / "notes.csv", ["a,b,c", "1,2,3"])
    with pytest.raises(AnnotationError, match=r"notes.csv: cannot tell the annotation format"):
        load_any(unknown)
    (tmp_path / "nothing").mkdir()
    recording(tmp_path / "nothing" / "loose.wav")
    with pytest.raises(AnnotationError, match=r"nothing: cannot tell the annotation format: no"):
        load_any(tmp_path / "nothing")
    with pytest.raises(AnnotationError, match="no such file or folder"):
        load_any(tmp_path / "missing.csv")
    table = plain(tmp_path / "pc", "clips/rec.wav,2,3,hum")
    with pytest.raises(AnnotationError, match=r"option kinds does not apply to csv annotations"):
        load_any(table, kinds={"annotated"})


def test_a_lone_string_is_one_name_not_characters(tmp_path: Path) -> None:
    songexplorer(tmp_path, "rec.wav,40000,44000,annotated,p")
    found = load_songexplorer(tmp_path, kinds="annotated", labels="pulse")
    assert spans(found) == [(1.0, 1.0, "pulse")]
    assert [p.message for p in found.problems] == [
        "unknown label 'p' (expected one of: pulse)",
        "unknown label 'sine' (expected one of: pulse)",
    ]
    assert found.filter(labels="p").annotations == []
