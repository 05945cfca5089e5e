//! ESL codec throughput: decoding every real capture, and encoding a typical sendmsg.

use std::path::Path;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use fsfax::esl::{Command, EslCodec, Limits};
use tokio_util::codec::{Decoder, Encoder};

/// All `*.from-fs.raw` captures concatenated (each ends on a frame boundary).
fn corpus() -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/esl");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".from-fs.raw"))
        .collect();
    names.sort();
    let mut all = Vec::new();
    for n in names {
        all.extend_from_slice(&std::fs::read(n).expect("capture"));
    }
    all
}

fn decode_all(bytes: &[u8]) -> usize {
    decode_with(bytes, Limits::default())
}

fn decode_with(bytes: &[u8], limits: Limits) -> usize {
    let mut codec = EslCodec::new(limits);
    let mut buf = BytesMut::from(bytes);
    let mut frames = 0;
    while let Ok(Some(m)) = codec.decode(&mut buf) {
        black_box(&m);
        frames += 1;
    }
    frames
}

fn bench_decode(c: &mut Criterion) {
    let data = corpus();
    let frames = decode_all(&data);
    assert!(frames > 1000, "corpus decoded to only {frames} frames");

    let mut g = c.benchmark_group("esl_decode_bytes");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_with_input(
        BenchmarkId::new("all_captures", data.len()),
        &data,
        |b, d| b.iter(|| decode_all(d)),
    );
    g.finish();

    let mut g = c.benchmark_group("esl_decode_frames");
    g.throughput(Throughput::Elements(frames as u64));
    g.bench_with_input(BenchmarkId::new("all_captures", frames), &data, |b, d| {
        b.iter(|| decode_all(d))
    });
    g.finish();

    // As fsfaxd's receptions decode: events without their channel variables.
    let lean = Limits {
        event_variables: false,
        ..Limits::default()
    };
    let mut g = c.benchmark_group("esl_decode_bytes_without_variables");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_with_input(
        BenchmarkId::new("all_captures", data.len()),
        &data,
        |b, d| b.iter(|| decode_with(d, lean)),
    );
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("esl_encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sendmsg_execute", |b| {
        let mut codec = EslCodec::default();
        let mut out = BytesMut::with_capacity(512);
        b.iter(|| {
            out.clear();
            let cmd = Command::execute(
                None,
                black_box("rxfax"),
                black_box("/var/spool/hylafax/recvq/fax000000123.tif"),
                Some(black_box("6faf4cb7-c565-4c57-a6fa-f2e6dea6dd97")),
            )
            .expect("valid command");
            codec.encode(&cmd, &mut out).expect("encode");
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
