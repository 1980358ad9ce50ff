/* ddpm-eval's subcommands (eval/eval_main.c dispatches). */
#ifndef DDPM_EVAL_MAIN_H
#define DDPM_EVAL_MAIN_H

/* `ddpm-eval bpd ...` (eval/eval_bpd.c, the only MPI part): argv[0] is "bpd". */
int eval_bpd_main(int argc, char **argv);

#endif
