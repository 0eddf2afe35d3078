//! `export_plugin!`: the exported ABI of the plugin, in one place.
//!
//! Slurm finds a SPANK plugin by `dlsym`: `plugin_name`, `plugin_type`, `plugin_version`
//! and the `slurm_spank_*` callbacks. pyxis exports exactly eight callbacks; exporting
//! more changes Slurm's behaviour (a `job_prolog` makes slurmd fork a SPANK prolog for
//! every job), so the set here is fixed and checked against `nm -D --defined-only`.
//! Each callback is one line into [`crate::spank::boundary`].

/// Emits the plugin symbols. `$hooks` is a module with one function per callback
/// (`init`, `init_post_opt`, `user_init`, `task_init`, `task_exit`, `exit`, `slurmd_exit`,
/// `job_epilog`) taking `&Spank` and an `option` function taking `(i32, Option<&str>, bool)`.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:literal, hooks: $hooks:path) => {
        /// Must stay `pyxis`: Slurm keys forwarded options as `<option>:pyxis` and names
        /// their environment `_SLURM_SPANK_OPTION_pyxis_*`.
        #[allow(unsafe_code, non_upper_case_globals)]
        #[no_mangle]
        pub static plugin_name: [u8; $name.len()] = *$name;

        #[allow(unsafe_code, non_upper_case_globals)]
        #[no_mangle]
        pub static plugin_type: [u8; 6] = *b"spank\0";

        /// Slurm (>= 21.08) refuses plugins built for another major.minor release.
        #[allow(unsafe_code, non_upper_case_globals)]
        #[no_mangle]
        pub static plugin_version: ::std::ffi::c_uint = ::spank_sys::SLURM_VERSION_NUMBER;

        $crate::export_plugin!(@hook slurm_spank_init, init, $hooks);
        $crate::export_plugin!(@hook slurm_spank_init_post_opt, init_post_opt, $hooks);
        $crate::export_plugin!(@hook slurm_spank_user_init, user_init, $hooks);
        $crate::export_plugin!(@hook slurm_spank_task_init, task_init, $hooks);
        $crate::export_plugin!(@hook slurm_spank_task_exit, task_exit, $hooks);
        $crate::export_plugin!(@hook slurm_spank_exit, exit, $hooks);
        $crate::export_plugin!(@hook slurm_spank_slurmd_exit, slurmd_exit, $hooks);
        $crate::export_plugin!(@hook slurm_spank_job_epilog, job_epilog, $hooks);

        /// The callback of every option; passed to Slurm by pointer, never exported.
        ///
        /// # Safety
        /// Called by Slurm only, with NULL or a NUL-terminated argument.
        #[allow(unsafe_code)]
        pub(crate) unsafe extern "C" fn option_callback(
            val: ::std::ffi::c_int,
            optarg: *const ::std::ffi::c_char,
            remote: ::std::ffi::c_int,
        ) -> ::std::ffi::c_int {
            // SAFETY: these are the arguments Slurm passed to this option callback.
            unsafe { $crate::spank::boundary::option(val, optarg, remote, { use $hooks as h; h::option }) }
        }
    };
    (@hook $symbol:ident, $func:ident, $hooks:path) => {
        /// # Safety
        /// Called by Slurm only, with its handle and plugstack arguments.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub unsafe extern "C" fn $symbol(
            spank: ::spank_sys::spank_t,
            argc: ::std::ffi::c_int,
            argv: *mut *mut ::std::ffi::c_char,
        ) -> ::std::ffi::c_int {
            // SAFETY: these are the arguments Slurm passed to this callback.
            unsafe { $crate::spank::boundary::hook(stringify!($func), spank, argc, argv, { use $hooks as h; h::$func }) }
        }
    };
}
