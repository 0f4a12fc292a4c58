//! `ferrogpt export --gguf` and GGUF files given to `sample`: a run exported and read back
//! decodes the same greedy text as its directory (GPT-2 and a grouped-query Llama with
//! character tokenizers, f32; f16 and q8_0 load), and bad files or types get one line.

mod common;

use common::*;
use std::path::Path;

fn greedy(checkpoint: &Path) -> String {
    ok(&[
        "sample",
        "--checkpoint",
        s(checkpoint),
        "--prompt",
        "ROMEO: But",
        "--tokens",
        "16",
        "--temperature",
        "0",
    ])
    .stdout
}

#[test]
fn an_exported_run_samples_the_same_text() {
    let dir = tmp("gguf-cli");
    let data = verse_file(&dir);
    for (name, extra) in [
        ("gpt2", &[][..]),
        (
            "llama",
            &["--family", "llama", "--n-kv-head", "2", "--untied"][..],
        ),
    ] {
        let run = dir.join(name);
        let mut args = small_train(&data, &run, "4");
        args.extend_from_slice(&["--tokenizer", "char"]);
        args.extend_from_slice(extra);
        ok(&args);
        let file = dir.join(format!("{name}.gguf"));
        let o = ok(&["export", "--gguf", s(&file), "--checkpoint", s(&run)]);
        assert!(
            o.stdout.contains(&format!("architecture {name}")),
            "{}",
            o.stdout
        );
        let want = greedy(&run);
        assert!(!want.is_empty());
        assert_eq!(greedy(&file), want, "{name}");
        let loss = |c: &Path| ok(&["eval", "--checkpoint", s(c), "--data", s(&data)]).stdout;
        assert_eq!(loss(&file), loss(&run), "{name}");
        // f16 weights: the file is about half the size and still loads.
        let half = dir.join(format!("{name}-f16.gguf"));
        ok(&[
            "export",
            "--gguf",
            s(&half),
            "--checkpoint",
            s(&run),
            "--type",
            "f16",
        ]);
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert!(size(&half) * 10 < size(&file) * 7, "{name}");
        assert!(!greedy(&half).is_empty());
        let q8 = dir.join(format!("{name}-q8.gguf"));
        ok(&[
            "export",
            "--gguf",
            s(&q8),
            "--checkpoint",
            s(&run),
            "--type",
            "q8_0",
        ]);
        assert!(size(&q8) < size(&half), "{name}");
        assert!(!greedy(&q8).is_empty());
    }
    fails_with(
        &[
            "export",
            "--gguf",
            s(&dir.join("x.gguf")),
            "--checkpoint",
            s(&dir.join("gpt2")),
            "--type",
            "q4_k",
        ],
        "is not f32, f16 or q8_0",
    );
    std::fs::write(dir.join("bad.gguf"), b"GGUF\x03\x00\x00\x00\x05").unwrap();
    fails_with(
        &[
            "sample",
            "--checkpoint",
            s(&dir.join("bad.gguf")),
            "--tokens",
            "2",
        ],
        "truncated",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
