//go:build !purego

#include "textflag.h"

// func maskBlocksSSE2(src *byte, blocks int, pa, pb uint64, am, bm *uint64)
//
// pa and pb are the two bytes sought, each repeated eight times.
TEXT ·maskBlocksSSE2(SB), NOSPLIT, $0-48
	MOVQ src+0(FP), SI
	MOVQ blocks+8(FP), CX
	MOVQ am+32(FP), DI
	MOVQ bm+40(FP), R8
	MOVQ pa+16(FP), AX
	MOVQ AX, X8
	PUNPCKLQDQ X8, X8
	MOVQ pb+24(FP), AX
	MOVQ AX, X9
	PUNPCKLQDQ X9, X9

loop:
	MOVOU 0(SI), X0
	MOVOU 16(SI), X1
	MOVOU 32(SI), X2
	MOVOU 48(SI), X3

	MOVO X0, X4
	PCMPEQB X8, X4
	PMOVMSKB X4, AX
	MOVO X1, X5
	PCMPEQB X8, X5
	PMOVMSKB X5, BX
	MOVO X2, X6
	PCMPEQB X8, X6
	PMOVMSKB X6, DX
	MOVO X3, X7
	PCMPEQB X8, X7
	PMOVMSKB X7, R9
	SHLQ $16, BX
	ORQ BX, AX
	SHLQ $32, DX
	ORQ DX, AX
	SHLQ $48, R9
	ORQ R9, AX
	MOVQ AX, 0(DI)

	PCMPEQB X9, X0
	PMOVMSKB X0, AX
	PCMPEQB X9, X1
	PMOVMSKB X1, BX
	PCMPEQB X9, X2
	PMOVMSKB X2, DX
	PCMPEQB X9, X3
	PMOVMSKB X3, R9
	SHLQ $16, BX
	ORQ BX, AX
	SHLQ $32, DX
	ORQ DX, AX
	SHLQ $48, R9
	ORQ R9, AX
	MOVQ AX, 0(R8)

	ADDQ $64, SI
	ADDQ $8, DI
	ADDQ $8, R8
	DECQ CX
	JNZ loop
	RET
