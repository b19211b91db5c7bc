//! The mount plan: what it contains and in which order, and what executing it asks of
//! the syscall seam (recorded, no root needed).

use std::path::{Path, PathBuf};

use super::*;
use crate::cli::Args;
use crate::sys::Recorder;
use clap::Parser;

fn spec(extra: &[&str]) -> Spec {
    let mut v = vec!["unionrun", "run", "--lower", "/tmp"];
    v.extend_from_slice(extra);
    v.extend_from_slice(&["--", "true"]);
    match Args::try_parse_from(v).unwrap().command {
        crate::cli::Command::Run(r) => r.into_spec(Some("/tmp/x".into()), 0).unwrap(),
        _ => unreachable!(),
    }
}

fn ctx(userns: bool) -> PlanContext {
    PlanContext {
        userns,
        source: RootSource::Union,
    }
}

fn pos(plan: &MountPlan, pred: impl Fn(&MountOp) -> bool) -> usize {
    plan.ops.iter().position(pred).expect("op in plan")
}

fn fs_at(plan: &MountPlan, ty: &str, dst: &str) -> usize {
    pos(
        plan,
        |o| matches!(o, MountOp::Fs { fstype, dst: d, .. } if *fstype == ty && d == Path::new(dst)),
    )
}

#[test]
fn order_is_rslave_rootfs_system_user_pivot_readonly() {
    let t = tempfile::tempdir().unwrap();
    let b = format!("{}:/data:ro", t.path().display());
    let p = MountPlan::build(
        &spec(&["--bind", &b, "--tmpfs", "/scratch:1m", "--read-only"]),
        &ctx(false),
    );
    assert_eq!(p.ops[0], MountOp::RSlaveAll);
    assert_eq!(p.ops[1], MountOp::BindRootfs);
    let proc = fs_at(&p, "proc", "/proc");
    let dev = fs_at(&p, "tmpfs", "/dev");
    let pts = fs_at(&p, "devpts", "/dev/pts");
    let sys = fs_at(&p, "sysfs", "/sys");
    let bind = pos(
        &p,
        |o| matches!(o, MountOp::Bind { dst, .. } if dst == Path::new("/data")),
    );
    let tmp = fs_at(&p, "tmpfs", "/scratch");
    let pivot = pos(&p, |o| *o == MountOp::PivotRoot);
    assert!(proc < dev && dev < pts && pts < sys && sys < bind && bind < tmp && tmp < pivot);
    assert_eq!(p.ops.last(), Some(&MountOp::RootReadOnly));
    let MountOp::Bind {
        read_only,
        recursive,
        ..
    } = &p.ops[bind]
    else {
        unreachable!()
    };
    assert!(*read_only && *recursive);
    assert!(p.describe().contains("pivot_root"));
}

#[test]
fn devpts_gid_only_without_userns_and_sys_bind_without_netns() {
    let pts = |p: &MountPlan| {
        p.ops.iter().find_map(|o| match o {
            MountOp::Fs {
                fstype: "devpts",
                data,
                ..
            } => data.clone(),
            _ => None,
        })
    };
    assert!(pts(&MountPlan::build(&spec(&[]), &ctx(false)))
        .unwrap()
        .contains("gid=5"));
    assert!(!pts(&MountPlan::build(&spec(&[]), &ctx(true)))
        .unwrap()
        .contains("gid="));
    let p = MountPlan::build(&spec(&["--net", "host"]), &ctx(true));
    assert!(p.ops.iter().any(|o| matches!(o, MountOp::Bind { src, read_only: true, recursive: true, .. } if src == Path::new("/sys"))));
    assert!(!p.ops.iter().any(|o| matches!(
        o,
        MountOp::Fs {
            fstype: "sysfs",
            ..
        }
    )));
}

#[test]
fn devices_are_bound_not_created() {
    let p = MountPlan::build(&spec(&[]), &ctx(true));
    for d in mounts::DEVICES {
        let dst = PathBuf::from("/dev").join(d);
        assert!(p.ops.iter().any(|o| matches!(o, MountOp::Bind { src, dst: x, file: true, .. } if *x == dst && *src == dst)), "{d}");
    }
    assert!(p.ops.contains(&MountOp::Symlink {
        target: "pts/ptmx".into(),
        link: "/dev/ptmx".into()
    }));
}

#[test]
fn execution_calls_in_order_and_stops_at_first_failure() {
    let s = spec(&["--read-only"]);
    let p = MountPlan::build(&s, &ctx(false));
    let rec = Recorder::default();
    p.execute(Path::new("/r"), &rec).unwrap();
    let slave = rec.index("MS_REC | MS_SLAVE");
    let self_bind = rec.index("mount /r /r - MsFlags(MS_BIND | MS_REC)");
    let proc = rec.index("mount proc /proc proc");
    let pivot = rec.index("pivot_root . .");
    let detach = rec.index("umount2 . MntFlags(MNT_DETACH)");
    let ro = rec.index("setattr / rec=false set=0x1");
    assert!(slave < self_bind && self_bind < proc && proc < pivot && pivot < detach && detach < ro);
    assert!(rec.index("chdir /r") < pivot);

    let failing = Recorder {
        fail_on: Some("devpts".into()),
        ..Default::default()
    };
    let e = p.execute(Path::new("/r"), &failing).unwrap_err();
    assert!(e.to_string().contains("devpts"), "{e}");
    assert!(!failing.lines().iter().any(|l| l.contains("pivot_root")));
}

#[test]
fn overlay_root_and_its_options() {
    let d = overlay_data(
        &["/l1".into(), "/l2".into()],
        Path::new("/u"),
        Path::new("/w"),
        true,
    );
    assert_eq!(d, "lowerdir=/l1:/l2,upperdir=/u,workdir=/w,userxattr");
    let p = MountPlan::build(
        &spec(&[]),
        &PlanContext {
            userns: false,
            source: RootSource::Overlay(d.clone()),
        },
    );
    assert_eq!(p.ops[1], MountOp::OverlayRoot { data: d });
}

#[test]
fn own_cgroup2_dir_is_found_below_the_cgroup2_mount() {
    let t = tempfile::tempdir().unwrap();
    let point = t.path().join("uni fied");
    std::fs::create_dir_all(point.join("a/b")).unwrap();
    std::fs::create_dir_all(point.join("b")).unwrap();
    let esc = point.display().to_string().replace(' ', "\\040");
    let mi = format!(
        "20 1 8:1 / / rw - ext4 /dev/vda rw\n\
         30 20 0:26 / {esc} rw,nosuid - cgroup2 cgroup2 rw\n"
    );
    assert_eq!(mounts::cgroup2_dir_in(&mi, "/a/b"), Some(point.join("a/b")));
    // A cgroup2 mount rooted lower (a cgroup namespace's view) is joined relative to it.
    let mi_rooted = mi.replace("0:26 / ", "0:26 /a ");
    assert_eq!(
        mounts::cgroup2_dir_in(&mi_rooted, "/a/b"),
        Some(point.join("b"))
    );
    assert_eq!(mounts::cgroup2_dir_in(&mi, "/missing"), None);
    assert_eq!(
        mounts::cgroup2_dir_in("20 1 8:1 / / rw - ext4 x rw\n", "/a"),
        None
    );
}

#[test]
fn cgroup_bind_attrs_follow_the_flags() {
    let f = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    assert_eq!(mounts::attrs_of(f), 0xf);
    assert_eq!(mounts::attrs_of(MsFlags::MS_RELATIME), 0);
}
