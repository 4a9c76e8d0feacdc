/* pam_session_probe.so: a test module that stands where pam_systemd (or pam_env) would,
 * after pam_idtoken in a PAM stack, and reports what a module in that phase sees.
 *
 * Session phase: reads the PAM data item systemd.runtime_max_sec exactly as pam_systemd
 * does (pam_get_data, a C string) and tells the application what it found, as a
 * PAM_TEXT_INFO message:
 *   "probe: systemd.runtime_max_sec=SECONDS"  or  "probe: systemd.runtime_max_sec unset"
 * With `out=PATH`, setcred and the session phase also append a line to PATH:
 *   "phase=setcred|open_session runtime_max_sec=S memory_max=M tasks_max=T IDTOKEN_EXP=E"
 * (each item's value, or "unset")
 * for callers that do not show PAM messages (sshd's session phase, which runs in the
 * parent that did not authenticate). authenticate is PAM_IGNORE: it never changes a login.
 * Built by the test that uses it (cc -shared -fPIC ... -lpam); never installed. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <security/pam_modules.h>
#include <security/pam_ext.h>

#define ITEM "systemd.runtime_max_sec"

static const char *item(pam_handle_t *pamh, const char *name)
{
    const void *value = NULL;
    if (pam_get_data(pamh, name, &value) == PAM_SUCCESS && value != NULL)
        return (const char *)value;
    return NULL;
}

static const char *runtime_max_sec(pam_handle_t *pamh)
{
    return item(pamh, ITEM);
}

static const char *or_unset(const char *value)
{
    return value != NULL ? value : "unset";
}

static void record(pam_handle_t *pamh, int argc, const char **argv, const char *phase)
{
    const char *out = NULL, *exp = pam_getenv(pamh, "IDTOKEN_EXP");
    FILE *f;
    int i;

    for (i = 0; i < argc; i++)
        if (strncmp(argv[i], "out=", 4) == 0)
            out = argv[i] + 4;
    if (out == NULL || (f = fopen(out, "a")) == NULL)
        return;
    fprintf(f, "phase=%s runtime_max_sec=%s memory_max=%s tasks_max=%s IDTOKEN_EXP=%s\n", phase,
            or_unset(runtime_max_sec(pamh)), or_unset(item(pamh, "systemd.memory_max")),
            or_unset(item(pamh, "systemd.tasks_max")), or_unset(exp));
    fclose(f);
}

PAM_EXTERN int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh; (void)flags; (void)argc; (void)argv;
    return PAM_IGNORE;
}

PAM_EXTERN int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)flags;
    record(pamh, argc, argv, "setcred");
    return PAM_SUCCESS;
}

PAM_EXTERN int pam_sm_open_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    const char *seconds = runtime_max_sec(pamh);
    (void)flags;
    record(pamh, argc, argv, "open_session");
    if (seconds != NULL)
        pam_info(pamh, "probe: " ITEM "=%s", seconds);
    else
        pam_info(pamh, "probe: " ITEM " unset");
    return PAM_SUCCESS;
}

PAM_EXTERN int pam_sm_close_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh; (void)flags; (void)argc; (void)argv;
    return PAM_SUCCESS;
}
