/* OpenBLAS start-up: the right kernel and the right number of threads.
 *
 * Debian's OpenBLAS 0.3.21 does not recognise some AVX-512 CPUs and falls back to
 * its generic "Prescott" kernels (SGEMM about 50 GFLOP/s instead of 170-290 on 2 Zen 4 cores). It reads
 * OPENBLAS_CORETYPE only when the library loads, so blas_setup() re-executes the
 * program once with the variable set when it sees that fallback on a CPU with
 * AVX-512 (SkylakeX) or AVX2 (Haswell). A value already in the environment is
 * respected. The same re-exec sets GOMP_SPINCOUNT=10000 when neither it nor
 * OMP_WAIT_POLICY is set (libgomp's default spinning collapses the speed on a
 * shared machine; docs/performance.md). Call it first thing in main(), before
 * MPI_Init and before threads. */
#ifndef DDPM_BLAS_SETUP_H
#define DDPM_BLAS_SETUP_H

/* May not return (re-exec). argv must be main's argv. */
void blas_setup(char **argv);
/* Sets the compute thread count: threads > 0 as given, else the CPUs this process
 * may run on (sched_getaffinity) divided by ranks_per_node (at least 1). Returns it.
 * Built with OpenMP (the default), that is the OpenMP thread count and OpenBLAS
 * runs single-threaded inside the ops' threads; without OpenMP it is OpenBLAS's. */
int blas_set_threads(int threads, int ranks_per_node);
/* The kernel OpenBLAS runs ("SkylakeX", "Haswell", "Prescott", ...) and how it was
 * chosen ("detected", "OPENBLAS_CORETYPE from the environment", "corrected from Prescott"). */
const char *blas_kernel_name(void);
const char *blas_kernel_origin(void);
/* CPUs available to this process. */
int cpu_count_available(void);

#endif
