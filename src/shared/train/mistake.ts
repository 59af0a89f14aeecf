import { z } from 'zod';

/**
 * One misclassified sample, the record every evaluator keeps (training, `eval`, `export`, `serve`), workers send in
 * their evaluation reply and eval.json stores as `misclassified`.
 */
export const mistakeSchema = z.object({
  /** Index into the evaluated split (e.g. the MNIST test set). */
  index: z.number().int().nonnegative(),
  label: z.number().int().nonnegative(),
  predicted: z.number().int().nonnegative(),
  /** The model's probability for `predicted`. */
  confidence: z.number().finite(),
});

export type Mistake = z.infer<typeof mistakeSchema>;
