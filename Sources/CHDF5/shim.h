// Thin C shims for HDF5 macros that Swift cannot import.
//
// H5T_NATIVE_*, H5P_* and friends are macros that expand to global variables
// initialised by H5open(), or to casts; Swift's importer drops them. Each shim
// returns the value the macro denotes at the time of the call.
#ifndef HERALD_CHDF5_SHIM_H
#define HERALD_CHDF5_SHIM_H
#include <hdf5.h>
#include <stdio.h>
#include <string.h>

static inline hid_t herald_h5p_default(void) { return H5P_DEFAULT; }
static inline hid_t herald_h5s_all(void) { return H5S_ALL; }
static inline hsize_t herald_h5s_unlimited(void) { return H5S_UNLIMITED; }

static inline hid_t herald_h5t_native_int8(void) { return H5T_NATIVE_INT8; }
static inline hid_t herald_h5t_native_uint8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t herald_h5t_native_int32(void) { return H5T_NATIVE_INT32; }
static inline hid_t herald_h5t_native_uint32(void) { return H5T_NATIVE_UINT32; }
static inline hid_t herald_h5t_native_uint16(void) { return H5T_NATIVE_UINT16; }
static inline hid_t herald_h5t_native_int64(void) { return H5T_NATIVE_INT64; }
static inline hid_t herald_h5t_native_uint64(void) { return H5T_NATIVE_UINT64; }
static inline hid_t herald_h5t_native_double(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t herald_h5t_c_s1(void) { return H5T_C_S1; }
static inline size_t herald_h5t_variable(void) { return H5T_VARIABLE; }

static inline hid_t herald_h5p_file_create(void) { return H5P_FILE_CREATE; }
static inline hid_t herald_h5p_group_create(void) { return H5P_GROUP_CREATE; }
static inline hid_t herald_h5p_file_access(void) { return H5P_FILE_ACCESS; }
static inline hid_t herald_h5p_dataset_create(void) { return H5P_DATASET_CREATE; }
static inline hid_t herald_h5p_dataset_access(void) { return H5P_DATASET_ACCESS; }
static inline hid_t herald_h5p_link_create(void) { return H5P_LINK_CREATE; }

static inline unsigned herald_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline unsigned herald_h5f_acc_excl(void) { return H5F_ACC_EXCL; }
static inline unsigned herald_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned herald_h5f_acc_rdwr(void) { return H5F_ACC_RDWR; }
static inline unsigned herald_h5f_acc_swmr_read(void) { return H5F_ACC_SWMR_READ; }
static inline H5F_libver_t herald_h5f_libver_latest(void) { return H5F_LIBVER_LATEST; }
static inline H5F_libver_t herald_h5f_libver_v110(void) { return H5F_LIBVER_V110; }
static inline hid_t herald_h5t_std_i64le(void) { return H5T_STD_I64LE; }
static inline hid_t herald_h5t_std_u8le(void) { return H5T_STD_U8LE; }

// Clears the superblock's "open for writing" mark on open, as h5clear -s does, through the
// file-access property HDF5 registers for that purpose ("clear_status_flags"). A crashed
// SWMR writer leaves the mark set, and stock readers then refuse the file.
static inline herr_t herald_h5p_set_clear_status_flags(hid_t fapl) {
    hbool_t clear = 1;
    return H5Pset(fapl, "clear_status_flags", &clear);
}

// Silences HDF5's default error printer: the Swift wrapper turns errors into
// Swift errors that carry the message instead. Also turns off HDF5's atexit cleanup (a
// no-op once the library is initialised, so it must come first): every Swift handle closes
// its own identifier, and after a failed write (disk full) the recorder abandons handles
// whose closing would crash inside libhdf5; atexit would close them anyway.
static inline void herald_h5e_silence(void) {
    H5dont_atexit();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}
static inline hid_t herald_h5e_default(void) { return H5E_DEFAULT; }

// The calling thread's HDF5 error stack, innermost first ("H5FD_sec2_lock: unable to lock
// file, errno = 11…"), into `buffer`: the cause of a failure, not only that it failed.
static herr_t herald_h5e_walker(unsigned n, const H5E_error2_t *e, void *data) {
    char *buffer = (char *)data;
    size_t used = strlen(buffer);
    if (n < 4 && used < 900) {
        snprintf(buffer + used, 1000 - used, "%s%s: %s", used ? "; " : "", e->func_name ? e->func_name : "?", e->desc ? e->desc : "");
    }
    return 0;
}
static inline void herald_h5e_describe(char *buffer) {
    buffer[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, herald_h5e_walker, buffer);
}
#endif
