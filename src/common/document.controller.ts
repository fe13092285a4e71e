import {
  Body,
  Controller,
  Delete,
  Get,
  Headers,
  HttpCode,
  Inject,
  Param,
  Patch,
  Post,
  Query,
  Type,
} from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import type { AnyAbility } from '@casl/ability';
import { Authenticated, CurrentAbility, CurrentPrincipal, Principal } from '@app/realtime';
import { parseDeleteBody } from './delete-body';
import type { DocumentService } from './document.service';

/**
 * The REST controller of one sample collection (`/api/<collection>`): list, create, get,
 * PATCH and DELETE, all authenticated, delegating to the collection's DocumentService.
 */
export function documentController(
  collection: string,
  service: Type<DocumentService<any>>,
  listFilters: string,
): Type<unknown> {
  @ApiTags(collection)
  @Controller(`api/${collection}`)
  @Authenticated()
  class DocumentController {
    constructor(@Inject(service) private readonly documents: DocumentService<any>) {}

    @Get()
    @ApiOperation({ summary: `List ${collection}: ?${listFilters}&limit=&cursor=` })
    list(@CurrentAbility() ability: AnyAbility, @Query() query: Record<string, unknown>) {
      return this.documents.list(ability, query);
    }

    @Post()
    @ApiOperation({
      summary:
        'Create (201 with the document); with `Idempotency-Key`, a retry answers with the document the key made',
    })
    create(
      @CurrentPrincipal() principal: Principal,
      @CurrentAbility() ability: AnyAbility,
      @Body() body: unknown,
      @Headers('idempotency-key') idempotencyKey?: string,
    ) {
      return this.documents.create(principal, ability, body, idempotencyKey);
    }

    @Get(':id')
    get(@CurrentAbility() ability: AnyAbility, @Param('id') id: string) {
      return this.documents.get(ability, id);
    }

    @Patch(':id')
    @ApiOperation({
      summary:
        'Update; `version` in the body or If-Match; 409 with the current document when stale',
    })
    update(
      @CurrentPrincipal() principal: Principal,
      @CurrentAbility() ability: AnyAbility,
      @Param('id') id: string,
      @Body() body: unknown,
      @Headers('if-match') ifMatch?: string,
    ) {
      return this.documents.update(principal, ability, id, body, ifMatch);
    }

    @Delete(':id')
    @HttpCode(204)
    @ApiOperation({ summary: 'Delete; `version` in the body or If-Match; 409 when stale' })
    async remove(
      @CurrentPrincipal() principal: Principal,
      @CurrentAbility() ability: AnyAbility,
      @Param('id') id: string,
      @Body() body: unknown,
      @Headers('if-match') ifMatch?: string,
    ): Promise<void> {
      await this.documents.remove(principal, ability, id, parseDeleteBody(body), ifMatch);
    }
  }
  return DocumentController;
}
