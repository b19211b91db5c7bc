//! criterion micro-benchmarks of the union core's hot paths (no FUSE): lookup through 1,
//! 4 and 32 branches, a merged readdir of 10k entries over 3 branches, copy-up of a 4 KiB
//! and a 64 MiB file. Run: `cargo bench --bench core`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use unionfs::core::{Branch, Config, FormatChoice, Mode, Stack, Union};

fn union_over(dirs: &[&Path]) -> Union {
    let branches = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mode = if i == 0 { Mode::Rw } else { Mode::Ro };
            let mut b = Branch::open(d, mode).expect("branch");
            if mode == Mode::Rw {
                b.attach_work(None, false).expect("work dir");
            }
            b
        })
        .collect();
    Union::new(
        Stack::new(branches, FormatChoice::Wh).expect("stack"),
        Config::default(),
    )
}

/// `n` branches each holding `d/`; the looked-up file is only in the lowest one.
fn lookup(c: &mut Criterion) {
    for n in [1usize, 4, 32] {
        let t = tempfile::tempdir().unwrap();
        let dirs: Vec<_> = (0..n).map(|i| t.path().join(format!("b{i}"))).collect();
        for d in &dirs {
            std::fs::create_dir_all(d.join("d")).unwrap();
        }
        std::fs::write(dirs[n - 1].join("d/target"), "x").unwrap();
        let refs: Vec<&Path> = dirs.iter().map(|p| p.as_path()).collect();
        let u = union_over(&refs);
        let d = u.lookup(&u.root().unwrap(), "d".as_ref()).unwrap();
        c.bench_function(&format!("lookup through {n} branches"), |b| {
            b.iter(|| u.lookup(&d, "target".as_ref()).unwrap())
        });
    }
}

fn readdir(c: &mut Criterion) {
    let t = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (0..3).map(|i| t.path().join(format!("b{i}"))).collect();
    for (i, d) in dirs.iter().enumerate() {
        std::fs::create_dir_all(d.join("big")).unwrap();
        // 10k names in all, a third per branch, some shadowed by a higher branch.
        for j in 0..3400 {
            std::fs::write(d.join("big").join(format!("f{}", j * 3 + i)), "").unwrap();
        }
    }
    let refs: Vec<&Path> = dirs.iter().map(|p| p.as_path()).collect();
    let u = union_over(&refs);
    let big = u.lookup(&u.root().unwrap(), "big".as_ref()).unwrap();
    assert!(u.readdir(&big).unwrap().len() >= 10_000);
    c.bench_function("merged readdir of 10k entries over 3 branches", |b| {
        b.iter(|| u.readdir(&big).unwrap())
    });
}

fn copy_up(c: &mut Criterion) {
    let mut g = c.benchmark_group("copy-up");
    g.sample_size(10);
    for (label, size) in [("4 KiB", 4usize << 10), ("64 MiB", 64 << 20)] {
        let t = tempfile::tempdir().unwrap();
        let low = t.path().join("low");
        std::fs::create_dir(&low).unwrap();
        std::fs::write(low.join("f"), vec![7u8; size]).unwrap();
        let mut n = 0;
        g.bench_function(label, |b| {
            b.iter_batched(
                || {
                    // A fresh upper for every copy: setup, not measured.
                    n += 1;
                    let up = t.path().join(format!("up{n}"));
                    std::fs::create_dir(&up).unwrap();
                    let u = union_over(&[&up, &low]);
                    let f = u.lookup(&u.root().unwrap(), "f".as_ref()).unwrap();
                    (u, f, up)
                },
                |(u, f, up)| {
                    // Opening for write copies the file up (data, metadata, fsync).
                    let fd = u.open(&f, libc::O_WRONLY).unwrap();
                    drop(fd);
                    up
                },
                BatchSize::PerIteration,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, lookup, readdir, copy_up);
criterion_main!(benches);
