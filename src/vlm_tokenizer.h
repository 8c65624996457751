/* Tokenizers (tokenizer.json), chat templates, prompt assembly. Owned by issue 4. */
#ifndef VLM_TOKENIZER_H
#define VLM_TOKENIZER_H
#endif
