//! The Docker driver in-process against the real engine, through the test
//! harness: a volume backed up and restored into a new volume, compared by
//! a listing of paths, modes, sizes and content hashes made inside a
//! container.

use respaldo_core::source::RestoreTarget;
use respaldo_testing::harness::{runtime, Harness, RestoreOptions};
use respaldo_testing::servers::docker_objects::Volume;

#[test]
fn a_volume_round_trips_into_a_new_volume() {
    let rt = runtime();
    let v = Volume::new("inproc", &[]);
    v.sh(
        "mkdir -p /v/conf/d && echo 'port = 3000' > /v/conf/app.ini && \
          dd if=/dev/urandom of=/v/blob bs=1k count=700 2>/dev/null && \
          chmod 600 /v/conf/app.ini && ln -s conf/app.ini /v/link",
    );
    let listing = v.listing();

    let h = rt.block_on(Harness::new());
    let source = h
        .source(
            &respaldo_source_docker::DRIVER,
            &format!("volumes = [\"{}\"]", v.name),
        )
        .unwrap();
    let backup = rt
        .block_on(h.backup_with("volumes", source.clone()))
        .unwrap();

    let copy = Volume::future("inproc-copy");
    rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Other(copy.name.clone()),
        RestoreOptions::default(),
    ))
    .unwrap();
    assert_eq!(copy.listing(), listing);
    rt.block_on(h.verify());
}
