//! A step whose option values are not UTF-8: enroot, the `--conf` script and the task
//! get the user's bytes exactly (`crate::core::bytes`), as with pyxis.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use super::fakes::Node;
use crate::core::args::OptionId;
use crate::core::bytes::decode;

fn os(b: &[u8]) -> OsString {
    OsString::from_vec(b.to_vec())
}

#[test]
fn image_mount_workdir_and_save_reach_enroot_byte_exact() {
    let mut node = Node::new("bytes", 1);
    node.keys.push("use_squashfuse=0".into());
    // The job's cwd is not UTF-8 either: the relative save path resolves below it.
    node.slurm.env.borrow_mut()[0] = os(b"PWD=/home/u\xff");
    let dir = node.root.as_os_str().as_bytes().to_vec();
    let image = [dir.as_slice(), b"/d\xff\xfe/img.sqsh"].concat();
    let source = [dir.as_slice(), b"/m\xff\xfe"].concat();
    std::fs::create_dir(OsString::from_vec(source.clone())).unwrap();
    std::fs::create_dir(os(&[dir.as_slice(), b"/d\xff\xfe"].concat())).unwrap();
    std::fs::write(OsString::from_vec(image.clone()), b"hsqs").unwrap();
    let mounts = [source.as_slice(), b":/mnt\xfe"].concat();
    let mut phase = node.prepare(&[
        (OptionId::Image, Some(&decode(&image))),
        (OptionId::Mounts, Some(&decode(&mounts))),
        (OptionId::Workdir, Some(&decode(b"/w\xff"))),
        (OptionId::Save, Some(&decode(b"out\xfe.sqsh"))),
    ]);
    let (entered, finished) = node.run(&mut phase);
    assert_eq!((entered, finished), (vec![Ok(())], Ok(())));

    let argvs = node.enroot.argvs.borrow();
    let create = argvs.iter().find(|a| a[0] == "create").unwrap();
    assert_eq!(create.last(), Some(&os(&image)), "{create:?}");
    let export = argvs.iter().find(|a| a[0] == "export").unwrap();
    assert_eq!(export[3], os(b"/home/u\xff/out\xfe.sqsh"), "{export:?}");
    let conf = &node.enroot.confs.borrow()[0];
    let line = [
        b"\tprintf '%s\\n' '",
        source.as_slice(),
        b" /mnt\xfe x-create=auto,rbind'\n",
    ]
    .concat();
    assert!(
        conf.windows(line.len()).any(|w| w == line),
        "{}",
        conf.escape_ascii()
    );
    assert_eq!(node.host.chdirs.borrow()[0].as_os_str(), os(b"/w\xff"));
}
