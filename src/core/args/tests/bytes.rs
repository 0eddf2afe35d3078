//! Unit tests of option values that are not UTF-8 (`crate::core::bytes`).

use super::*;

#[test]
fn values_that_are_not_utf8_pass_through() {
    use crate::core::bytes::{decode, encode};
    use OptionId::*;
    let (image, mounts) = (
        decode(b"/tmp/d\xff/img.sqsh"),
        decode(b"/tmp/\xff:/mnt\xfe"),
    );
    let (workdir, save) = (decode(b"/\xff"), decode(b"/tmp/\xff.sqsh"));
    let args = applied(&[
        (Image, Some(&image)),
        (Mounts, Some(&mounts)),
        (Workdir, Some(&workdir)),
        (Save, Some(&save)),
    ])
    .unwrap();
    assert_eq!(
        encode(args.image.as_deref().unwrap()),
        b"/tmp/d\xff/img.sqsh"
    );
    let m = &args.mounts[0];
    assert_eq!(
        (encode(&m.source), encode(&m.target)),
        (b"/tmp/\xff".to_vec(), b"/mnt\xfe".to_vec())
    );
    assert_eq!(encode(args.workdir.as_deref().unwrap()), b"/\xff");
    assert_eq!(encode(args.save.as_deref().unwrap()), b"/tmp/\xff.sqsh");
    let from_env = env_of(&[
        ("PYXIS_CONTAINER_IMAGE", &image),
        ("PYXIS_CONTAINER_WORKDIR", &workdir),
    ]);
    let mut args = Args::default();
    assert!(args.apply_env(from_env).is_empty());
    assert_eq!(
        encode(args.image.as_deref().unwrap()),
        b"/tmp/d\xff/img.sqsh"
    );
    // Lengths count the user's bytes, not the mapped text's.
    let max = decode(&[0xff; MAX_VALUE_LEN]);
    assert!(applied(&[(Image, Some(&max))]).is_ok());
    let long = decode(&[0xff; MAX_VALUE_LEN + 1]);
    assert_eq!(
        err(&[(Image, Some(&long))]),
        "--container-image: argument too long"
    );
    // Our own rules stay: W8 names are UTF-8, env names identifiers; shown as \xNN.
    assert_eq!(
        err(&[(Name, Some(&decode(b"a\xff:exec")))]),
        "--container-name: invalid name: a\\xff"
    );
    assert_eq!(
        err(&[(Env, Some(&decode(b"A\xfe")))]),
        "--container-env: invalid variable name: A\\xfe"
    );
}
