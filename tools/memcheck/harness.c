/*
 * Memcheck harness for spank_pyxis.so (docs/memcheck.md, tools/memcheck.sh).
 *
 * Plays the part of srun or slurmstepd: provides the spank_* and slurm_* symbols the
 * plugin imports (this executable is linked with -rdynamic, so dlopen resolves them
 * here), loads the plugin and calls its hooks in Slurm's order, so that valgrind sees
 * every byte the plugin reads or writes through the C ABI.
 *
 *   harness PLUGIN srun [--container-OPT[=VALUE]]...
 *       S_CTX_LOCAL: slurm_spank_init, every option callback, init_post_opt, exit
 *   harness PLUGIN step UID GID JOBID STEPID [--container-OPT[=VALUE]]... -- CMD...
 *       S_CTX_REMOTE (run as root): init, option callbacks (remote), init_post_opt,
 *       user_init, then a forked task (credentials dropped to UID/GID as slurmstepd
 *       does) that runs task_init and then execs CMD, task_exit after it ended, exit
 *
 * Plugin arguments (plugstack.conf words) come from PXT_MC_PLUGIN_ARGS, split at
 * blanks. Exit status: 0 when every hook returned 0 (and the task exited 0), else 1;
 * with PXT_MC_IGNORE_OPTION_ERRORS set, refused options do not count (hostile input).
 * Not a test double of Slurm's semantics beyond what the hooks use.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <grp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/syscall.h>

#include <slurm/spank.h>

static int ctx = S_CTX_LOCAL;
static uid_t job_uid;
static gid_t job_gid;
static uint32_t job_id = 1, step_id;
static char **job_argv;
static int job_argc;
static char **job_env;         /* NULL-terminated, malloc'ed strings */

#define MAX_OPTS 64
static struct spank_option opts[MAX_OPTS];
static int nopts;

/* ---------------------------------------------------------------- logging */
static void vlog(const char *lvl, const char *fmt, va_list ap)
{
    fprintf(stderr, "harness %s: ", lvl);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}
#define LOGFN(name, lvl)                     \
    void name(const char *fmt, ...)          \
    {                                        \
        va_list ap;                          \
        va_start(ap, fmt);                   \
        vlog(lvl, fmt, ap);                  \
        va_end(ap);                          \
    }
LOGFN(slurm_info, "info")
LOGFN(slurm_verbose, "verbose")
LOGFN(slurm_debug, "debug")
LOGFN(slurm_debug2, "debug2")
LOGFN(slurm_debug3, "debug3")
LOGFN(slurm_spank_log, "spank_log")
LOGFN(slurm_error, "error")

/* ---------------------------------------------------------------- spank API */
const char *spank_strerror(spank_err_t err) { return err == ESPANK_SUCCESS ? "Success" : "error"; }
int spank_remote(spank_t sp) { (void)sp; return ctx == S_CTX_REMOTE; }
spank_context_t spank_context(void) { return ctx; }

spank_err_t spank_option_register(spank_t sp, struct spank_option *opt)
{
    (void)sp;
    if (!opt || !opt->name || nopts >= MAX_OPTS)
        return ESPANK_BAD_ARG;
    opts[nopts++] = *opt; /* Slurm copies the struct; the strings must stay valid */
    return ESPANK_SUCCESS;
}

static char **env_find(const char *var)
{
    size_t n = strlen(var);
    for (char **e = job_env; e && *e; e++)
        if (strncmp(*e, var, n) == 0 && (*e)[n] == '=')
            return e;
    return NULL;
}

spank_err_t spank_getenv(spank_t sp, const char *var, char *buf, int len)
{
    (void)sp;
    char **e = env_find(var);
    if (!e)
        return ESPANK_ENV_NOEXIST;
    const char *v = *e + strlen(var) + 1;
    if ((int)strlen(v) >= len)
        return ESPANK_NOSPACE;
    strcpy(buf, v);
    return ESPANK_SUCCESS;
}

spank_err_t spank_setenv(spank_t sp, const char *var, const char *val, int overwrite)
{
    (void)sp;
    char **e = env_find(var);
    if (e && !overwrite)
        return ESPANK_ENV_EXISTS;
    char *s;
    if (asprintf(&s, "%s=%s", var, val) < 0)
        return ESPANK_ERROR;
    if (e) {
        free(*e);
        *e = s;
        return ESPANK_SUCCESS;
    }
    size_t n = 0;
    while (job_env[n])
        n++;
    char **ne = realloc(job_env, (n + 2) * sizeof(*ne));
    if (!ne)
        return ESPANK_ERROR;
    job_env = ne;
    job_env[n] = s;
    job_env[n + 1] = NULL;
    return ESPANK_SUCCESS;
}

spank_err_t spank_unsetenv(spank_t sp, const char *var)
{
    (void)sp;
    char **e = env_find(var);
    if (!e)
        return ESPANK_SUCCESS;
    free(*e);
    do
        e[0] = e[1];
    while (*e++);
    return ESPANK_SUCCESS;
}

spank_err_t spank_get_item(spank_t sp, spank_item_t item, ...)
{
    (void)sp;
    va_list ap;
    spank_err_t rc = ESPANK_SUCCESS;
    if (ctx != S_CTX_REMOTE)
        return ESPANK_NOT_REMOTE;
    va_start(ap, item);
    switch (item) {
    case S_JOB_UID: *va_arg(ap, uid_t *) = job_uid; break;
    case S_JOB_GID: *va_arg(ap, gid_t *) = job_gid; break;
    case S_JOB_ID: *va_arg(ap, uint32_t *) = job_id; break;
    case S_JOB_STEPID: *va_arg(ap, uint32_t *) = step_id; break;
    case S_JOB_LOCAL_TASK_COUNT:
    case S_JOB_TOTAL_TASK_COUNT: *va_arg(ap, uint32_t *) = 1; break;
    case S_JOB_NODEID: *va_arg(ap, uint32_t *) = 0; break;
    case S_JOB_SUPPLEMENTARY_GIDS: {
        static gid_t gids[1];
        gids[0] = job_gid;
        *va_arg(ap, gid_t **) = gids;
        *va_arg(ap, int *) = 1;
        break;
    }
    case S_JOB_ARGV:
        *va_arg(ap, int *) = job_argc;
        *va_arg(ap, char ***) = job_argv;
        break;
    case S_JOB_ENV: *va_arg(ap, char ***) = job_env; break;
    default: rc = ESPANK_BAD_ARG;
    }
    va_end(ap);
    return rc;
}

/* ---------------------------------------------------------------- seccomp
 * Valgrind does not implement seccomp(2) (it answers ENOSYS, and a filter would also
 * apply to valgrind's own system calls), so the plugin's one seccomp(2) call is
 * interposed here: the filter program it passes is written to /dev/null, which makes
 * memcheck check that every byte of it is addressable and initialised, and success is
 * returned. Every other syscall(2) call goes to libc's. The filter's effect is tested
 * by the unit and integration tests, not here. */
long syscall(long n, ...)
{
    va_list ap;
    va_start(ap, n);
    long a[6];
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (n == SYS_seccomp && a[0] == SECCOMP_SET_MODE_FILTER) {
        const struct sock_fprog *prog = (const struct sock_fprog *)a[2];
        int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        ssize_t w1 = write(fd, prog, sizeof(*prog));
        ssize_t w2 = write(fd, prog->filter, prog->len * sizeof(*prog->filter));
        close(fd);
        fprintf(stderr, "harness: seccomp filter of %u instructions checked, not installed\n", prog->len);
        return (w1 < 0 || w2 < 0) ? -1 : 0;
    }
    static long (*real)(long, ...);
    if (!real)
        real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* ---------------------------------------------------------------- driver */
typedef int (*hook_f)(spank_t, int, char **);
static void *plugin;
static int plugin_ac;
static char *plugin_av[32];
static int failures;

static int call(const char *name)
{
    hook_f f = (hook_f)dlsym(plugin, name);
    if (!f)
        return 0; /* Slurm skips hooks a plugin does not export */
    int rc = f((spank_t)&ctx, plugin_ac, plugin_av);
    fprintf(stderr, "harness: %s -> %d\n", name, rc);
    if (rc != 0)
        failures++;
    return rc;
}

/* --container-OPT[=VALUE]: find the registered option and call its callback */
static void apply_option(const char *arg)
{
    const char *name = arg + 2, *eq = strchr(name, '=');
    size_t n = eq ? (size_t)(eq - name) : strlen(name);
    for (int i = 0; i < nopts; i++) {
        if (strlen(opts[i].name) == n && strncmp(opts[i].name, name, n) == 0) {
            int rc = opts[i].cb(opts[i].val, eq ? eq + 1 : NULL, ctx == S_CTX_REMOTE);
            fprintf(stderr, "harness: option %.*s -> %d\n", (int)n, name, rc);
            if (rc != 0 && !getenv("PXT_MC_IGNORE_OPTION_ERRORS"))
                failures++;
            return;
        }
    }
    fprintf(stderr, "harness: no option %.*s registered\n", (int)n, name);
    failures++;
}

static void copy_environ(void)
{
    extern char **environ;
    size_t n = 0;
    while (environ[n])
        n++;
    job_env = calloc(n + 1, sizeof(*job_env));
    for (size_t i = 0; i < n; i++)
        job_env[i] = strdup(environ[i]);
}

static void free_env(void)
{
    for (char **e = job_env; e && *e; e++)
        free(*e);
    free(job_env);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s PLUGIN srun|step ...\n", argv[0]);
        return 2;
    }
    char *pa = getenv("PXT_MC_PLUGIN_ARGS");
    char *pa_copy = pa ? strdup(pa) : NULL;
    for (char *t = pa_copy ? strtok(pa_copy, " \t") : NULL; t && plugin_ac < 31; t = strtok(NULL, " \t"))
        plugin_av[plugin_ac++] = t;
    plugin = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!plugin) {
        fprintf(stderr, "harness: %s\n", dlerror());
        return 2;
    }
    copy_environ();
    int i = 3;
    if (strcmp(argv[2], "srun") == 0) {
        ctx = S_CTX_LOCAL;
        call("slurm_spank_init");
        for (; i < argc; i++)
            apply_option(argv[i]);
        call("slurm_spank_init_post_opt");
        call("slurm_spank_exit");
    } else if (strcmp(argv[2], "step") == 0 && argc >= 7) {
        ctx = S_CTX_REMOTE;
        job_uid = (uid_t)strtoul(argv[3], NULL, 10);
        job_gid = (gid_t)strtoul(argv[4], NULL, 10);
        job_id = (uint32_t)strtoul(argv[5], NULL, 10);
        step_id = (uint32_t)strtoul(argv[6], NULL, 10);
        call("slurm_spank_init");
        for (i = 7; i < argc && strcmp(argv[i], "--") != 0; i++)
            apply_option(argv[i]);
        if (i < argc)
            i++;
        job_argv = argv + i;
        job_argc = argc - i;
        if (job_argc < 1) {
            fprintf(stderr, "harness: step needs -- CMD\n");
            return 2;
        }
        if (call("slurm_spank_init_post_opt") == 0 && call("slurm_spank_user_init") == 0) {
            pid_t pid = fork();
            if (pid == 0) {
                /* slurmstepd's task: credentials of the job user, then task_init, exec */
                if (setgroups(1, &job_gid) || setresgid(job_gid, job_gid, job_gid) ||
                    setresuid(job_uid, job_uid, job_uid)) {
                    perror("harness: dropping credentials");
                    _exit(126);
                }
                if (call("slurm_spank_task_init") != 0)
                    _exit(125);
                execvpe(job_argv[0], job_argv, job_env);
                perror("harness: exec");
                _exit(127);
            }
            int status = 0;
            if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "harness: task failed (status 0x%x)\n", status);
                failures++;
            }
            call("slurm_spank_task_exit");
        }
        call("slurm_spank_exit");
    } else {
        fprintf(stderr, "harness: bad mode %s\n", argv[2]);
        return 2;
    }
    /* no dlclose: the plugin's state lives in its statics until the process ends (as in
     * srun and slurmstepd), and unmapping them would hide where leaks were allocated */
    free_env();
    free(pa_copy);
    return failures ? 1 : 0;
}
