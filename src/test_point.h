/*-------------------------------------------------------------------------
 *
 * test_point.h
 *	  Named points at which a sync worker can be made to crash, for tests.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_TEST_POINT_H
#define CALABI_PUSH_TEST_POINT_H

extern void cp_test_point_define_setting(void);
extern void cp_test_point(const char *name);

#endif							/* CALABI_PUSH_TEST_POINT_H */
