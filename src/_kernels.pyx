# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, embedsignature=True
"""Sequence-level LSTM kernels: the time loop, its OpenMP work split and the backward pass.

Layouts (NR = 16 floats or 8 doubles, one 64-byte panel; Hp = H rounded up to NR; G4 = 4*Hp):

- gates: rows of G4 values. Hidden units come in blocks of NR; block u owns the four panels
  [4u, 4u+4) holding its i, f, g, o gates. Whoever owns a unit block owns all it needs.
- packed weights (built once by fastlstm/_packing.py): w_ih (I x G4) and w_hh (H x G4) hold the
  transposed weights in slabs of wgroup panels (K x wgroup*NR each; wgroup divides 4, so a unit
  block's four gates are 4/wgroup whole slabs, one after another), zero in padding, with
  b_ih + b_hh pre-summed into one G4 row. wgroup is the ISA's weight_group at packing time: the
  panels of one GEMM register tile, which then reads its weights as one contiguous stream. The
  backward reads w_ih_t (G4 x Ip) and w_hh_t (G4 x Hp): the weights themselves, rows in the same
  interleaved gate order, stored one NR-wide panel of columns at a time (a G4 x NR slab each), so
  a GEMM walks each panel's column contiguously: row-major, a row stride of 4 KiB (H = 1024) put
  every row of a panel in the same cache set and cost 20% of those GEMMs' speed.
- h_state/c_state: slots of B x Hp. Inference keeps 2 h slots (step t reads slot t%2, writes the
  other) and 1 c slot (updated in place); training keeps all T+1 of each (slot 0 = h0/c0), and
  tc_state (T slots) holds tanh(c), so the backward recomputes no exponentials.
- projection (proj_size P > 0; Pp = P rounded up to NR): h_state slots hold r = h @ W_hr^T
  (B x Pp: the recurrence reads P values, so w_hh is P x G4 and w_hh_t G4 x Pp), the cell's h
  goes to h_full (B x Hp; all T steps when training), and w_hr (H x Pp) / w_hr_t (P x Hp) are
  packed by NR-wide column panels.

Work split, per call (plan_team: as many threads as the work pays for, up to the value asked):
- batch split: each thread owns whole batch rows for the entire sequence, no barrier per step;
- unit split (small batches): each thread owns unit blocks, one barrier per step, so each thread
  streams only its own slice of w_hh (with a projection, a second barrier per step: the
  projection is split by output panels). The barrier is fl_omp.h's own, not OpenMP's: ~250 ns
  against libgomp's ~600 ns between two cores.
A team that has slept starts only for work that pays for its wake-up (fl_omp.h, fl_team_size).
A plan of one thread calls the per-thread body directly, with no OpenMP region (libgomp's costs
~0.5 us even for one thread); the bodies take their thread number and team size as arguments.
Either way every element is computed by the same chain of operations, so results are bitwise
identical whatever the thread count, batch size or chunking.
"""
from cpython.exc cimport PyErr_CheckSignals
from cpython.buffer cimport (PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBUF_WRITABLE, PyBuffer_Release,
                             PyObject_GetBuffer)
from cython.parallel cimport parallel
from libc.stdint cimport int8_t, int32_t, int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

import math
import os
import threading
import time

import numpy as np

# The parts, one job each, included as text into this one extension module: fl_omp.h and
# fl_dispatch.c keep process-wide state in file statics (CPU sharing, the fork guard, the active
# instruction set) that a second module would copy and silently split. Each part uses only what
# the parts before it define, and module-level code (thread_policy's) runs in this order.
include "c_declarations.pxi"
include "kernel_table.pxi"
include "thread_policy.pxi"
include "interrupt.pxi"
include "forward.pxi"
include "backward.pxi"
include "entry_points.pxi"
include "small_calls.pxi"
include "machine_facts.pxi"
include "int8_kernels.pxi"
include "int8_forward.pxi"
include "int8_small_calls.pxi"
