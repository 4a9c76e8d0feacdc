/* pam_session_probe.so: a test module that stands where pam_systemd would, after
 * pam_idtoken in a PAM stack. In the session phase it reads the PAM data item
 * systemd.runtime_max_sec exactly as pam_systemd does (pam_get_data, a C string) and tells
 * the application what it found, as a PAM_TEXT_INFO message:
 *   "probe: systemd.runtime_max_sec=SECONDS"  or  "probe: systemd.runtime_max_sec unset"
 * Built by the test that uses it (cc -shared -fPIC ... -lpam); never installed. */
#include <stddef.h>
#include <security/pam_modules.h>
#include <security/pam_ext.h>

#define ITEM "systemd.runtime_max_sec"

PAM_EXTERN int pam_sm_open_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    const void *value = NULL;
    (void)flags; (void)argc; (void)argv;
    if (pam_get_data(pamh, ITEM, &value) == PAM_SUCCESS && value != NULL)
        pam_info(pamh, "probe: " ITEM "=%s", (const char *)value);
    else
        pam_info(pamh, "probe: " ITEM " unset");
    return PAM_SUCCESS;
}

PAM_EXTERN int pam_sm_close_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh; (void)flags; (void)argc; (void)argv;
    return PAM_SUCCESS;
}
