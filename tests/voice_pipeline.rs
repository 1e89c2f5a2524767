//! examples/voice_pipeline.sh end to end: three lines of text through `lckv pipe` on the real
//! SmolLM2 and espeak-ng, checked with sox: one WAV per sentence event, each a real sound
//! (`soxi -D` gives a duration above zero), named in order, and every answer finished. jq,
//! espeak-ng and sox are required (scripts/install_deps.sh); without them the test fails.

mod common;

use std::process::Command;

#[test]
fn each_sentence_becomes_a_wav_file() {
    for tool in ["jq", "espeak-ng", "soxi"] {
        common::required_tool(tool);
    }
    let model = common::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    let dir = std::env::temp_dir().join(format!("lckv-voice-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("turns.txt");
    std::fs::write(
        &input,
        "What is the capital of France?\n\nTell me two facts about cats.\nThank you!\n",
    )
    .unwrap();
    let out_dir = dir.join("out");
    let out = Command::new(common::repo_root().join("examples/voice_pipeline.sh"))
        .arg(&input)
        .env("MODEL", &model)
        .env("OUT", &out_dir)
        .env("LCKV", env!("CARGO_BIN_EXE_lckv"))
        .env("LCKV_ARGS", "--temp 0 -n 40")
        .output()
        .expect("running examples/voice_pipeline.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the script failed:\n{stdout}\n{stderr}"
    );
    // One "request N: ..." line per non-empty input line, none with an error.
    assert_eq!(stderr.matches("request ").count(), 3, "{stderr}");
    assert!(!stderr.contains("lckv pipe:"), "{stderr}");

    // Each spoken line names its WAV: out/001.wav, out/002.wav, ... in order.
    let spoken: Vec<&str> = stdout.lines().collect();
    assert!(
        spoken.len() >= 3,
        "at least a sentence per answer:\n{stdout}"
    );
    for (i, line) in spoken.iter().enumerate() {
        let wav = out_dir.join(format!("{:03}.wav", i + 1));
        assert!(
            line.starts_with(&format!("{}: ", wav.display())),
            "line {i}: {line}"
        );
        let bytes = std::fs::metadata(&wav).map(|m| m.len()).unwrap_or(0);
        assert!(bytes > 44, "{} is empty ({bytes} bytes)", wav.display());
        let soxi = Command::new("soxi").arg("-D").arg(&wav).output().unwrap();
        assert!(soxi.status.success(), "soxi cannot read {}", wav.display());
        let secs: f64 = String::from_utf8_lossy(&soxi.stdout)
            .trim()
            .parse()
            .unwrap();
        assert!(secs > 0.0, "{} lasts {secs} s", wav.display());
    }
    let extra = out_dir.join(format!("{:03}.wav", spoken.len() + 1));
    assert!(!extra.exists(), "more WAV files than sentences");
    let _ = std::fs::remove_dir_all(&dir);
}
